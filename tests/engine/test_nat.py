"""Clients behind the NAT router on real containers (issue 16): exact counts on 100-port NAT
pools, the errno that changes, the router's counters, the server's view of its peers, and a
teardown that leaves nothing."""

from __future__ import annotations

import polars as pl
import pytest

from tcplimits import results
from tests.engine.helpers import run_ok

pytestmark = pytest.mark.docker

POOL = "40000-40099"  # 100 ports: searched whole by the NAT, so it fills exactly


def run(engine, tmp_path, name, **values):
    """A run behind (or beside) the NAT: finished ok, nothing left, not even the router."""
    values = {"port_range": "40000-40199", "nofile": 1000, "quiet_host_timeout": 5, **values}
    record = run_ok(engine, tmp_path / f"nat-{name}", **values)
    return record, pl.read_parquet(tmp_path / f"nat-{name}" / results.CLIENTS_FILE)


def check_through_nat(record, clients, total, ports=(40000, 40099)):
    nat = record["nat"]
    assert clients["connections"].sum() == total == nat["prediction"]["total"]
    assert set(clients["error"]) == {"ETIMEDOUT"}  # the NAT dropped the SYN: no EADDRNOTAVAIL
    assert nat["verdict"]["agrees"]
    assert nat["verdict"]["insert_failed"] >= 1 and nat["verdict"]["drop"] >= 1
    assert nat["counters"]["held"]["count"] >= total
    # The server saw only the NAT's addresses, from the NAT's ports.
    peers = nat["peers"]
    assert {p["addr"] for p in peers} <= set(nat["nat_addrs"])
    assert sum(p["connections"] for p in peers) == record["totals"]["server_accepted"] == total
    assert all(ports[0] <= p["port_lo"] <= p["port_hi"] <= ports[1] for p in peers)
    router = nat["router"]
    assert router["cap_add"] == ["NET_ADMIN"] and router["cap_drop"] == ["ALL"]
    assert router["ip_forward"] == "1" and router["time_wait_timeout_s"] == 120
    assert record["prediction"]["limit"] == "nat" and record["prediction"]["errno"] == "ETIMEDOUT"


def test_two_clients_share_one_nat_address(engine, tmp_path):
    """Two clients with 200 ports each behind one NAT address of 100 ports: 100 together."""
    record, clients = run(engine, tmp_path, "shared", clients=2, nat="gateway",
                          nat_port_range=POOL)
    check_through_nat(record, clients, 100)
    assert len(record["nat"]["peers"]) == 1


def test_a_client_range_larger_than_the_pool_changes_nothing(engine, tmp_path):
    record, clients = run(engine, tmp_path, "wide", port_range="40000-40999", nat="gateway",
                          nat_port_range=POOL)
    check_through_nat(record, clients, 100)


def test_two_nat_addresses_serve_clients_that_hash_apart(engine, tmp_path):
    """Each client address hashes to one NAT address per destination: the count is 100 per NAT
    address the hash used, exactly as the model's jhash2 says."""
    record, clients = run(engine, tmp_path, "addrs", clients=4, nat="gateway", nat_addrs=2,
                          nat_port_range=POOL)
    pred = record["nat"]["prediction"]
    used = {g["nat_addr"] for g in pred["groups"]}
    check_through_nat(record, clients, 100 * len(used))
    assert {p["addr"] for p in record["nat"]["peers"]} == used
    held = dict(clients.select("client", "connections").iter_rows())
    for group in pred["groups"]:  # each NAT address's clients held its pool together
        assert sum(held[c] for c in group["clients"]) == 100
    assert len(record["nat"]["nat_addrs"]) == 2


def test_two_server_ports_double_the_pool(engine, tmp_path):
    record, clients = run(engine, tmp_path, "ports", clients=2, server_ports=2, nat="gateway",
                          nat_port_range=POOL)
    check_through_nat(record, clients, 200)


def test_nat_none_is_the_direct_path(engine, tmp_path):
    record, clients = run(engine, tmp_path, "direct", clients=2)
    assert "nat" not in record or record.get("nat") is None
    assert set(clients["error"]) == {"EADDRNOTAVAIL"}
    assert clients["connections"].sum() == record["prediction"]["total"]
    assert clients["connections"].sum() == sum(200 - h for h in clients["held_ports"])


def test_teardown_leaves_no_router_and_no_conntrack_entries(engine, tmp_path):
    """No container, router or network is left (run() checks), the router's own table went
    with its namespace, and the host's entries for the run (both legs: client -> router and
    router -> server, each to the server's address) leave within CLOSE's 10 s once the agents
    reset their connections."""
    import time

    from tcplimits.engine import footprint

    record, clients = run(engine, tmp_path, "teardown", clients=2, nat="gateway",
                          nat_port_range=POOL)
    server = record["addresses"]["containers"]["server"][0]
    if footprint.conntrack_entries(server, 5000) is None:
        pytest.skip("the host's /proc/net/nf_conntrack is not readable here")
    deadline = time.monotonic() + 20
    while (left := footprint.conntrack_entries(server, 5000)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == 0


def test_churn_through_a_full_nat_pool_is_not_stopped_by_it(engine, tmp_path):
    """200/s for 5 s through a 100-port NAT pool, the client closing first and reusing its own
    ports after 1 s: the NAT's TIME_WAIT entries (120 s) would allow 0.83/s, yet the NAT
    evicts them and drops nothing; the run lasts its duration."""
    record, clients = run(engine, tmp_path, "churn", mode="churn", rate=200, duration=5,
                          closer="client", tw_reuse=1, port_range="40000-41999",
                          nat="gateway", nat_port_range=POOL)
    verdict = record["nat"]["verdict"]
    assert set(clients["error"]) == {"DURATION"}
    assert clients["connections"].sum() > 4 * 100
    assert verdict["insert_failed"] == 0 and verdict["drop"] == 0
    assert record["nat"]["counters"]["held"]["count"] <= 100 + 2


def test_a_nat_pool_below_1024(engine, tmp_path):
    """MASQUERADE --to-ports 500-599: the NAT writes ports below 1024 into the packets (it
    binds none, so ip_unprivileged_port_start has no say) and its 100 ports are the pool."""
    record, clients = run(engine, tmp_path, "low", clients=2, nat="gateway",
                          nat_port_range="500-599")
    check_through_nat(record, clients, 100, ports=(500, 599))
    assert record["nat"]["prediction"]["port_range"] == "500-599"


def sources_used(tmp_path, name):
    rows = pl.read_parquet(tmp_path / f"nat-{name}" / results.DESTINATIONS_FILE)
    return rows.filter(pl.col("connections") > 0)["source"].n_unique()


def test_extra_sources_behind_one_nat_address_add_nothing(engine, tmp_path):
    """One client, two source addresses (bind-no-port: each (source, destination) pair has
    the client's whole range, 400 on its side) behind one NAT address of 100 ports: the NAT
    translates both sources into its one pool, so 100, not 200."""
    record, clients = run(engine, tmp_path, "sources", client_addrs=2,
                          bind_mode="bind-no-port", nat="gateway", nat_port_range=POOL)
    check_through_nat(record, clients, 100)
    assert sources_used(tmp_path, "sources") == 2  # both sources went through the router
    assert record["nat"]["prediction"]["direct_total"] >= 2 * 190
    assert len(record["nat"]["peers"]) == 1


def test_extra_sources_hash_over_the_nat_addresses_as_the_model_says(engine, tmp_path):
    """One client with two sources behind three NAT addresses: each source hashes to a NAT
    address on its own (model.nat.nat_address, from the run's addresses). Sources that hash
    apart fill two pools in turn, 200 exactly (the one process alternates its two pairs, so
    both pools are full when it meets a full one); sources that hash together, 100. (Three:
    on the subnets the engine picks first, 10.210.0.0, .16.0 and .32.0, the two sources hash
    apart over three NAT addresses; over two, on 10.210.0.0, together.)"""
    record, clients = run(engine, tmp_path, "sources2", client_addrs=2,
                          bind_mode="bind-no-port", nat="gateway", nat_addrs=3,
                          nat_port_range=POOL)
    pred = record["nat"]["prediction"]
    used = {g["nat_addr"] for g in pred["groups"]}
    check_through_nat(record, clients, 100 * len(used))
    assert {p["addr"] for p in record["nat"]["peers"]} == used
    assert sources_used(tmp_path, "sources2") == 2


def test_churn_with_the_server_closing_first_is_held_down_at_the_nat(engine, tmp_path):
    """200/s for 4 s, the server closing first, through a 100-port NAT pool. Once the pool
    has turned over (0.5 s) every SYN comes on a NAT port the server holds in TIME_WAIT,
    which rejects half of them (random timestamp offsets per 4-tuple, PAWS), and the client's
    loop waits for each retransmission: no error, no dropped SYN, the rate held down to the
    NAT model's span. The same point without the NAT holds 200/s."""
    values = dict(mode="churn", rate=200, duration=4, closer="server",
                  port_range="40000-41999")
    _, direct = run(engine, tmp_path, "churn-direct", **values)
    assert direct["connections"].sum() >= 0.95 * 800
    record, clients = run(engine, tmp_path, "churn-server", nat="gateway",
                          nat_port_range=POOL, **values)
    pred, verdict = record["nat"]["churn_prediction"], record["nat"]["verdict"]
    held = clients["connections"].sum()
    assert pred["limit"] == "nat_paws"
    assert pred["connections_low"] <= held <= pred["connections_high"] < 800 / 2
    assert set(clients["error"]) == {"DURATION"} and verdict["insert_failed"] == 0
    assert verdict["agrees"] and record["churn"]["verdict"]["agrees"]
    assert record["churn"]["verdict"]["direct"]["agrees"] is False  # the direct model's 200/s
