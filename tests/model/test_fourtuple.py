"""The 4-tuple model and parameters (pure, no Docker). The expected counts are the ones measured
on this machine with a 500-port range (tests/test_fourtuple_engine.py measures them again)."""

from __future__ import annotations

import pytest

from tcplimits.model import fourtuple
from tcplimits import model
from tcplimits.config.params import FIELDS, ParamError, RunParams

R = 500
# (server_addrs, server_ports, client_addrs) -> connections, per bind mode
MEASURED = {
    "connect":      {(1, 1, 1): 500, (1, 2, 1): 1000, (2, 1, 1): 1000, (1, 1, 2): 500,
                     (2, 2, 2): 2000},
    "bind":         {(1, 1, 1): 500, (1, 2, 1): 500, (2, 1, 1): 500, (1, 1, 2): 1000,
                     (2, 2, 2): 1000},
    "bind-no-port": {(1, 1, 1): 500, (1, 2, 1): 1000, (2, 1, 1): 1000, (1, 1, 2): 1000,
                     (2, 2, 2): 4000},
}


@pytest.mark.parametrize("mode, shape, count",
                         [(m, s, c) for m, table in MEASURED.items() for s, c in table.items()])
def test_port_capacity_matches_the_measured_table(mode, shape, count):
    addrs, ports, sources = shape
    assert fourtuple.port_capacity(R, mode, server_addrs=addrs, server_ports=ports,
                                   client_addrs=sources) == count
    params = RunParams(port_range="40000-40499", nofile=20000, bind_mode=mode,
                       server_addrs=addrs, server_ports=ports, client_addrs=sources)
    p = model.predict(params, server_nofile=20000, server_workers=2)
    assert (p.total, p.limit) == (count, model.PORTS)
    assert p.errno == ("EADDRINUSE" if mode == "bind" else "EADDRNOTAVAIL")


# A listener on a specific address (like Docker's DNS on 127.0.0.11) and one on the
# wildcard, both in the range: measured 498 per destination with connect() and
# bind-no-port, 499 per source address with bind().
HELD = [{"addr": "127.0.0.1", "port": 40100, "state": "LISTEN"},
        {"addr": "0.0.0.0", "port": 40200, "state": "LISTEN"}]


@pytest.mark.parametrize("mode, shape, count", [
    ("connect", (1, 1, 1), 498), ("connect", (1, 2, 1), 996), ("connect", (1, 1, 2), 498),
    ("bind", (1, 1, 1), 499), ("bind", (1, 2, 1), 499), ("bind", (1, 1, 2), 998),
    ("bind-no-port", (1, 1, 1), 498), ("bind-no-port", (1, 2, 1), 996),
    ("bind-no-port", (1, 1, 2), 996),
])
def test_held_ports_cost_by_mode(mode, shape, count):
    addrs, ports, sources = shape
    assert fourtuple.port_capacity(R, mode, server_addrs=addrs, server_ports=ports,
                                   client_addrs=sources, held=HELD) == count


def test_docker_dns_port_costs_bind_nothing_and_connect_one():
    dns = [{"addr": "127.0.0.11", "port": 40007}]
    assert fourtuple.port_capacity(R, "bind", held=dns) == 500
    assert fourtuple.port_capacity(R, "connect", held=dns) == 499
    assert fourtuple.port_capacity(R, "bind-no-port", held=dns, client_addrs=2) == 998


def test_held_port_on_a_source_address_costs_that_source_in_bind_mode():
    held = [{"addr": "10.0.0.5", "port": 40001}]
    assert fourtuple.port_capacity(R, "bind", client_addrs=2, held=held,
                                   sources=["10.0.0.5", "10.0.0.70"]) == 999


def test_held_counts_from_the_dataset():
    assert fourtuple.held_from_counts("bind", 2, 1) == 1
    assert fourtuple.held_from_counts("connect", 2, 1) == 2
    params = RunParams(port_range="40000-40499", bind_mode="bind", client_addrs=2)
    p = model.predict(params, server_nofile=20000, server_workers=1, held_ports=[1])
    assert p.per_client == [998]


def test_pairs_order_and_connect_ignores_sources():
    assert fourtuple.pairs(["s1", "s2"], ["a1"], [5000, 5001], "bind") == [
        ("s1", "a1", 5000), ("s1", "a1", 5001), ("s2", "a1", 5000), ("s2", "a1", 5001)]
    assert fourtuple.pairs(["s1", "s2"], ["a1"], [5000], "connect") == [(None, "a1", 5000)]
    assert fourtuple.server_ports(3) == [5000, 5001, 5002]


def test_space_is_pool_times_destinations():
    assert fourtuple.space(1000, server_addrs=2, server_ports=3) == 6000


def test_descriptors_still_bind_when_the_tuple_space_is_large():
    params = RunParams(port_range="40000-40999", nofile=700, server_ports=4)
    p = model.predict(params, server_nofile=20000, server_workers=1)
    assert (p.total, p.limit, p.errno) == (697, model.DESCRIPTORS, "EMFILE")


def test_auto_workers_cover_the_whole_tuple_space():
    params = RunParams(port_range="40000-40999", nofile=20000, server_ports=4, procs=1)
    assert model.auto_server_workers(params, 1000) >= 4000 / 996


def test_defaults_keep_the_old_model():
    p = model.predict(RunParams(port_range="40000-40999"), server_nofile=20000,
                      server_workers=1, held_ports=[1])
    assert (p.per_client, p.errno) == ([999], "EADDRNOTAVAIL")
    assert RunParams().destinations == 1


def test_compare_run_uses_held_other_addr_in_bind_mode():
    run = {"run_id": "r", "status": "ok", "port_range": "40000-40499", "nofile": 20000,
           "bind_mode": "bind", "client_addrs": 2, "connections_total": 1000,
           "resolved_server_nofile": 20000, "resolved_server_workers": 1,
           "predicted_total": 1000, "held_ports": [1]}
    clients = [{"client": 1, "proc": 1, "connections": 1000, "error": "EADDRINUSE",
                "held_ports": 1, "held_other_addr": 1}]
    c = model.compare_run(run, clients)
    assert (c.expected, c.expected_errno, c.within_tolerance) == (1000, "EADDRINUSE", True)
    assert c.explanations == []


# --- parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("server_ports", 0), ("server_ports", 65), ("server_ports", "two"), ("server_ports", 1.5),
    ("server_addrs", 0), ("server_addrs", 65), ("server_addrs", "x"),
    ("client_addrs", 0), ("client_addrs", 65), ("client_addrs", True),
    ("bind_mode", "listen"), ("bind_mode", 3), ("bind_mode", ""),
])
def test_bad_tuple_values_name_key_and_value(key, value):
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({key: value}, flag_names=True)
    assert err.value.key == FIELDS[key].flag and err.value.value == value


def test_too_many_pairs_are_refused():
    with pytest.raises(ParamError, match="pairs"):
        RunParams(server_addrs=64, server_ports=64, client_addrs=2)


def test_bind_mode_is_normalised():
    assert RunParams.from_mapping({"bind_mode": " Bind-No-Port "}).bind_mode == "bind-no-port"


def test_older_run_records_load_with_the_tuple_defaults(tmp_path):
    from tcplimits.results import dataset

    old = {"run_id": "old", "status": "ok", "params": {"port_range": "40000-40999",
                                                       "nofile": 15000}}
    row = dataset.run_row(old, tmp_path)
    assert (row["server_ports"], row["server_addrs"], row["client_addrs"],
            row["bind_mode"]) == (1, 1, 1, "connect")
    assert "destinations" in dataset.TABLE_NAMES


def test_the_limit_sentence_counts_the_pools():
    def reason(**values):
        params = RunParams(port_range="40000-40999", **values)
        return model.limit_reason(params, {"limit": model.PORTS})

    assert reason().endswith("held in its namespace")
    assert "once for each of 3 destinations" in reason(server_ports=3)
    assert "whatever the 2 it has" in reason(client_addrs=2)
    assert "once per source address (2)" in reason(client_addrs=2, bind_mode="bind")
    assert "2 x 4" in reason(client_addrs=2, server_addrs=2, server_ports=2,
                             bind_mode="bind-no-port")
