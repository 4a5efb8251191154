"""The churn model: the sustainable rate and the stop, from the kernel facts measured here."""

import pytest

from tcplimits.model import churn as cm
from tcplimits.config.params import RunParams


def churn(**kw):
    return RunParams.from_mapping({"mode": "churn", "port_range": "40000-40999", **kw})


def test_client_closes_without_reuse_stops_at_the_pool_when_faster_than_pool_per_60s():
    p = cm.predict(churn(rate=100))
    assert p.sustainable_rate == [pytest.approx(1000 / 60)]
    assert (p.stops, p.stop_after, p.errno, p.limit) == (True, [1000], "EADDRNOTAVAIL", cm.TIME_WAIT)
    assert p.stop_at_s == [pytest.approx(10.0)]
    assert p.client_time_wait == [1000] and p.server_time_wait == 0


def test_client_closes_below_the_bound_does_not_stop_and_holds_rate_x_60_in_time_wait():
    p = cm.predict(churn(rate=10))
    assert (p.stops, p.errno, p.limit, p.stop_after) == (False, None, cm.RATE, [None])
    assert p.client_time_wait == [600]


def test_two_processes_share_the_container_pool():
    assert cm.predict(churn(rate=10, procs=2)).stops  # 20/s > 16.7/s


@pytest.mark.parametrize("rate, stops", [(500, False), (1500, True)])
def test_reuse_bounds_at_pool_per_reuse_delay(rate, stops):
    p = cm.predict(churn(rate=rate, tw_reuse=1))
    assert p.reuse and p.port_hold_s == cm.TW_REUSE_DELAY_S
    assert p.sustainable_rate == [1000.0]
    assert p.stops is stops
    # below half the range per delay one parity of the range suffices; above, all of it
    assert p.client_time_wait == [1000 if rate > 500 else 500]
    if stops:
        assert p.limit == cm.REUSE_DELAY and p.stop_at_s == [pytest.approx(1000 / 1500)]


@pytest.mark.parametrize("tw_reuse, timestamps", [(2, True), (0, True), (1, False)])
def test_reuse_needs_1_and_timestamps(tw_reuse, timestamps):
    p = cm.predict(churn(rate=500, tw_reuse=tw_reuse), timestamps=timestamps)
    assert not p.reuse and p.limit == cm.TIME_WAIT and p.stops


def test_held_ports_and_destinations_size_the_pool():
    p = cm.predict(churn(rate=10, clients=2, server_ports=2), held_ports=[1, 0])
    assert p.pool == [1998, 2000]
    assert p.sustainable_rate == [pytest.approx(1998 / 60), pytest.approx(2000 / 60)]


@pytest.mark.parametrize("four_tuple, pool, errno", [
    # connect(): one pool per destination; extra source addresses are never used
    ({"server_ports": 2, "server_addrs": 2}, 4000, "EADDRNOTAVAIL"),
    ({"client_addrs": 3}, 1000, "EADDRNOTAVAIL"),
    # bind((addr, 0)): one pool per source address, whatever the destinations
    ({"bind_mode": "bind", "server_ports": 4}, 1000, "EADDRINUSE"),
    ({"bind_mode": "bind", "client_addrs": 2, "server_addrs": 2}, 2000, "EADDRINUSE"),
    # bind-no-port: one pool per (source, destination) pair
    ({"bind_mode": "bind-no-port", "client_addrs": 2, "server_ports": 2}, 4000,
     "EADDRNOTAVAIL"),
])
def test_the_4_tuple_multiplies_the_pool_as_the_bind_mode_says(four_tuple, pool, errno):
    p = cm.predict(churn(rate=1000, **four_tuple))
    assert p.pool == [pool] and p.stop_after == [pool] and p.errno == errno
    assert p.sustainable_rate == [pytest.approx(pool / 60)]
    assert p.stop_at_s == [pytest.approx(pool / 1000)]


def test_tw_reuse_does_not_help_bind_which_never_picks_a_time_wait_port():
    bind = cm.predict(churn(rate=100, tw_reuse=1, bind_mode="bind"))
    assert not bind.reuse and bind.port_hold_s == cm.TIME_WAIT_S and bind.stops
    assert bind.errno == "EADDRINUSE" and bind.limit == cm.TIME_WAIT
    no_port = cm.predict(churn(rate=100, tw_reuse=1, bind_mode="bind-no-port"))
    assert no_port.reuse and no_port.stops is False


def test_reuse_on_several_destinations_uses_one_parity_of_each_pool():
    # 1,200/s over 3 destinations: 400/s per pool of 1,000, under half a pool per second
    p = cm.predict(churn(rate=1200, tw_reuse=1, server_ports=3))
    assert p.stops is False and p.sustainable_rate == [3000.0]
    assert p.client_time_wait == [1500]


def test_tw_reuse_2_reuses_toward_loopback_addresses_only():
    assert not cm.reuse_applies(churn(tw_reuse=2))
    assert cm.reuse_applies(RunParams(tw_reuse=2, network="loopback"))
    assert not cm.reuse_applies(RunParams(tw_reuse=2, network="loopback", timestamps=0))


def test_held_ports_cost_bind_nothing_when_bound_to_another_address():
    dns = [{"addr": "127.0.0.11", "port": 40500}]
    assert cm.predict(churn(rate=10), held_ports=[dns]).pool == [999]
    assert cm.predict(churn(rate=10, bind_mode="bind"), held_ports=[dns]).pool == [1000]


def test_rate_max_depends_on_the_loop():
    assert cm.predict(churn()).stops is None
    assert cm.predict(churn(), loop_rate=4000).stop_at_s == [pytest.approx(0.25)]
    assert cm.predict(churn(tw_reuse=1), loop_rate=800).stops is False


def test_server_closes_first_never_stops_and_time_wait_is_on_the_server():
    p = cm.predict(churn(closer="server"))
    assert (p.stops, p.errno, p.limit) == (False, None, cm.LOOP)
    assert p.client_time_wait == [0]
    assert p.server_time_wait == 500  # one parity of the range, per client
    assert cm.predict(churn(closer="server", rate=5)).server_time_wait == 300
    assert cm.predict(churn(closer="server", clients=3)).server_time_wait == 1500
    # more destinations: one parity of each pool
    assert cm.predict(churn(closer="server", server_addrs=2)).server_time_wait == 1000


def test_server_closes_with_bind_keeps_the_distinct_random_ports_of_60_s():
    # bind() draws a random port of one parity each time: 500 of them; at 10/s for 60 s
    # 600 draws hit 500 * (1 - e^-1.2) = 349 distinct ports
    assert cm.predict(churn(closer="server", bind_mode="bind", rate=10)).server_time_wait == 349
    assert cm.predict(churn(closer="server", bind_mode="bind")).server_time_wait == 500


def rows(*procs):
    return [dict(client=c, proc=i, connections=n, error=e, elapsed_s=t, held_ports=h)
            for i, (c, n, e, t, h) in enumerate(procs, 1)]


def test_verdict_stop_as_predicted():
    v = cm.verdict("r", churn(), rows((1, 999, "EADDRNOTAVAIL", 0.25, 1)))
    assert v.agrees and v.stopped and v.stopped_at_s == 0.25
    assert v.sentence.startswith("as predicted") and "EADDRNOTAVAIL" in v.sentence
    assert v.prediction.stop_after == [999]
    assert "against 3,996/s reached (rate max)" in v.sentence  # the loop's own pace, not asked
    paced = cm.verdict("r", churn(rate=2000), rows((1, 999, "EADDRNOTAVAIL", 0.5, 1)))
    assert paced.agrees and "against 2,000/s asked" in paced.sentence


def test_verdict_stop_far_from_the_pool_differs():
    v = cm.verdict("r", churn(), rows((1, 700, "EADDRNOTAVAIL", 0.2, 0)))
    assert not v.agrees and "differs" in v.sentence


def test_verdict_no_stop_predicted_but_stopped_differs():
    v = cm.verdict("r", churn(rate=500, tw_reuse=1, duration=10),
                   rows((1, 1000, "EADDRNOTAVAIL", 2.0, 0)))
    assert not v.agrees


def test_verdict_paced_run_that_held_its_rate():
    v = cm.verdict("r", churn(rate=500, tw_reuse=1, duration=10),
                   rows((1, 5000, "DURATION", 10.0, 0)))
    assert v.agrees and v.rate == 500 and "ran the full 10 s" in v.sentence


def test_verdict_paced_run_below_its_rate_names_the_loop():
    v = cm.verdict("r", churn(rate=500, tw_reuse=1, duration=10),
                   rows((1, 3000, "DURATION", 10.0, 0)))
    assert not v.agrees and "CPU" in v.sentence


def test_verdict_server_closes_runs_through():
    v = cm.verdict("r", churn(closer="server", duration=10), rows((1, 30000, "DURATION", 10.0, 0)))
    assert v.agrees and v.rate == 3000


def test_verdict_counts_ports_freed_again_when_the_pace_varied():
    # measured: reuse on, rate max; a slow first second (222), then 909 in 0.69 s, stop at
    # 1.69 s after 1,131: the 1,000 ports plus those opened before 0.69 s (0-222) were reusable
    params = churn(tw_reuse=1, duration=20)
    seconds = [dict(client=1, proc=1, second=0, opened=222),
               dict(client=1, proc=1, second=1, opened=909)]
    v = cm.verdict("r", params, rows((1, 1131, "EADDRNOTAVAIL", 1.69, 0)), seconds=seconds)
    assert v.prediction.asked_rate == pytest.approx(909 / 0.69)  # its fastest second
    assert v.prediction.stops
    assert cm.released(seconds, 1, 0.69) == (0, 222)
    assert cm.released(seconds, 1, 1.5) == (222, 1131)
    assert v.agrees, v.sentence
    assert "+ up to 222 whose ports were free again" in v.sentence
    too_many = cm.verdict("r", params, rows((1, 1300, "EADDRNOTAVAIL", 1.69, 0)), seconds=seconds)
    assert not too_many.agrees
    # without the per-second rows the mean rate (669/s) stays under 1,000/s: no stop expected
    assert not cm.verdict("r", params, rows((1, 1131, "EADDRNOTAVAIL", 1.69, 0))).agrees


def test_verdict_rate_max_has_no_rate_to_hold():
    seconds = [dict(client=1, proc=1, second=s, opened=n) for s, n in enumerate([7000, 3000])]
    v = cm.verdict("r", churn(closer="server", duration=2), rows((1, 10000, "DURATION", 2.0, 0)),
                   seconds=seconds)
    assert v.agrees and "ran the full 2 s at 5,000/s" in v.sentence


def test_the_point_s_own_reuse_delay_and_timestamps_count():
    fast = cm.predict(churn(rate=4000, tw_reuse=1, tw_reuse_delay=100))
    assert fast.port_hold_s == 0.1 and fast.sustainable_rate == [10000.0] and not fast.stops
    assert cm.predict(churn(rate=500, tw_reuse=1, timestamps=0)).limit == cm.TIME_WAIT
