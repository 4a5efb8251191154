"""The 4-tuple on real containers: every member and every bind mode, with one and with several
destinations, exact counts (a 500-port range; held ports counted from the run's own data)."""

from __future__ import annotations

import polars as pl
import pytest

from tcplimits import results
from tcplimits.engine import container_specs, Resolved
from tcplimits.config.params import RunParams
from tests.engine.helpers import run_ok

pytestmark = pytest.mark.docker

R = 500
RANGE = "40000-40499"
ERRNO = {"connect": "EADDRNOTAVAIL", "bind": "EADDRINUSE", "bind-no-port": "EADDRNOTAVAIL"}


def run(engine, tmp_path, name, **values):
    values = {"port_range": RANGE, "nofile": 5000, **values}
    record = run_ok(engine, tmp_path / name, **values)
    clients = pl.read_parquet(tmp_path / name / results.CLIENTS_FILE)
    pairs = pl.read_parquet(tmp_path / name / results.DESTINATIONS_FILE)
    return record, clients, pairs


def held(row, mode):
    """Ports of the range this mode loses: every held port for connect(); for bind(), only
    those not bound to another specific address (Docker's DNS on 127.0.0.11 is not)."""
    return row["held_ports"] - (row["held_other_addr"] if mode == "bind" else 0)


def expected(mode, server_addrs, server_ports, client_addrs, lost):
    destinations = server_addrs * server_ports
    if mode == "connect":
        return destinations * (R - lost)
    if mode == "bind":
        return client_addrs * (R - lost)
    return client_addrs * destinations * (R - lost)


def check(record, clients, pairs, mode, addrs, ports, sources):
    (row,) = clients.iter_rows(named=True)
    lost = held(row, mode)
    want = expected(mode, addrs, ports, sources, lost)
    assert row["connections"] == want
    assert row["error"] == ERRNO[mode]
    assert record["prediction"]["total"] == want
    assert record["totals"]["server_accepted"] == want
    # The destinations table: one row per pair, summing to the process's count.
    n_sources = 1 if mode == "connect" else sources
    assert pairs.height == n_sources * addrs * ports
    assert pairs["connections"].sum() == want
    assert pairs["server_port"].unique().sort().to_list() == list(range(5000, 5000 + ports))
    assert pairs["server_addr"].n_unique() == addrs
    assert set(pairs["error"]) == {ERRNO[mode]}
    if mode == "bind":  # one pool per source, split round-robin over its destinations
        for _, group in pairs.group_by("source"):
            assert group["connections"].sum() == R - lost
            assert group["connections"].max() - group["connections"].min() <= 1
    else:  # every pair has the whole pool
        assert pairs["connections"].to_list() == [R - lost] * pairs.height
    return row


@pytest.mark.parametrize("mode", ["connect", "bind", "bind-no-port"])
@pytest.mark.parametrize("addrs, ports", [(1, 1), (2, 2)], ids=["one-destination",
                                                                  "four-destinations"])
def test_bind_mode_with_one_and_several_destinations(engine, tmp_path, mode, addrs, ports):
    record, clients, pairs = run(engine, tmp_path, f"t9-{mode}-{addrs}x{ports}",
                                 bind_mode=mode, server_addrs=addrs, server_ports=ports)
    check(record, clients, pairs, mode, addrs, ports, 1)
    assert len(record["addresses"]["containers"]["server"]) == addrs


def test_server_ports_member(engine, tmp_path):
    record, clients, pairs = run(engine, tmp_path, "t9-ports", server_ports=3)
    check(record, clients, pairs, "connect", 1, 3, 1)
    assert record["addresses"]["plan"] is None  # no extra address: Docker's own network


def test_server_addrs_member(engine, tmp_path):
    record, clients, pairs = run(engine, tmp_path, "t9-addrs", server_addrs=3)
    check(record, clients, pairs, "connect", 3, 1, 1)
    plan = record["addresses"]["plan"]
    server = record["addresses"]["containers"]["server"]
    assert server[1:] == plan["extra"]["server"]
    # Docker allocates only inside ip_range; the extra addresses lie outside it.
    import ipaddress
    ip_range = ipaddress.ip_network(plan["ip_range"])
    assert ipaddress.ip_address(server[0]) in ip_range
    assert not any(ipaddress.ip_address(a) in ip_range for a in server[1:])
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(plan["subnet"]) for a in server)


@pytest.mark.parametrize("mode", ["connect", "bind", "bind-no-port"])
def test_client_addrs_member(engine, tmp_path, mode):
    record, clients, pairs = run(engine, tmp_path, f"t9-sources-{mode}", client_addrs=2,
                                 bind_mode=mode)
    row = check(record, clients, pairs, mode, 1, 1, 2)
    own = record["addresses"]["containers"]["client1"]
    assert len(own) == 2 and own[0] == row["client_ip"]
    if mode == "connect":  # the route picks the source: the extra address stays unused
        assert pairs["source"].to_list() == [own[0]]
    else:
        assert sorted(pairs["source"].unique()) == sorted(own)


def test_agents_never_hold_a_capability(engine, tmp_path):
    record, _, _ = run(engine, tmp_path, "t9-caps", server_addrs=2, client_addrs=2, clients=2,
                       bind_mode="bind-no-port")
    agents = record["privileges"]["agents"]
    assert set(agents) == {"server", "client1", "client2"}
    for role, agent in agents.items():
        assert agent["cap_drop"] == ["ALL"] and not agent["cap_add"], role
        assert agent["user"] == "65534:65534", role
        # What the agent process itself reads in /proc/self/status: no capability at all.
        caps = agent["capabilities"]
        assert set(caps) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}, role
        assert all(int(v, 16) == 0 for v in caps.values()), (role, caps)
    helpers = record["privileges"]["helpers"]
    assert sorted(h["target"].rsplit("-", 1)[1] for h in helpers) == [
        "client1", "client2", "server"]
    containers = record["addresses"]["containers"]
    for helper in helpers:
        assert helper["cap_add"] == ["NET_ADMIN"] and helper["cap_drop"] == ["ALL"]
        assert helper["network_mode"].startswith("container:")
        role = helper["target"].rsplit("-", 1)[1]
        assert helper["added"] == containers[role][1:]
        assert set(helper["addresses_after"]) == set(containers[role])
    every = [a for addrs in containers.values() for a in addrs]
    assert len(every) == len(set(every)) == 6


def test_default_path_is_unchanged(engine, tmp_path):
    """All K = 1, mode connect: the agents' commands, the network and the counts are as
    before the 4-tuple parameters existed."""
    params = RunParams(port_range=RANGE, nofile=5000)
    specs = container_specs(params, Resolved(20000, 1, 1), "r", "img", "net", {})
    assert specs["client1"]["command"][2:] == [
        "--server", "server", "--port", "5000", "--client", "1", "--procs", "1",
        "--connect-timeout", "3.0", "--sample-every", "1", "--wait-signal", "--check-signal"]
    assert specs["server"]["command"][2:4] == ["--port", "5000"]
    record, clients, pairs = run(engine, tmp_path, "t9-default", nofile=5000)
    (row,) = clients.iter_rows(named=True)
    assert row["connections"] == R - row["held_ports"] and row["error"] == "EADDRNOTAVAIL"
    assert record["addresses"]["plan"] is None and record["privileges"]["helpers"] == []
    assert record["addresses"]["network"][0]["ip_range"] is None  # Docker's own allocation
    assert pairs.height == 1 and pairs["connections"][0] == row["connections"]


@pytest.mark.slow
def test_docker_dns_port_costs_connect_one_port_and_bind_none(engine, tmp_path):
    """Docker's DNS listener binds 127.0.0.11 on a port of the kernel's default range, so the
    default range always holds it: connect() loses that port, bind((source, 0)) does not.
    Slow: minutes (bind() scans every used port of the range for each new socket)."""
    got = {}
    for mode in ("connect", "bind"):
        record, clients, _ = run(engine, tmp_path, f"t9-dns-{mode}", port_range="32768-60999",
                                 nofile=15000, procs=2, bind_mode=mode)
        rows = clients.to_dicts()
        assert {r["held_ports"] for r in rows} == {1} and {r["held_other_addr"] for r in rows} == {1}
        got[mode] = clients["connections"].sum()
        assert got[mode] == record["prediction"]["total"]
        # One process may reach its own nofile first; the other takes the rest of the pool.
        assert ERRNO[mode] in set(clients["error"]) <= {ERRNO[mode], "EMFILE"}
    assert got == {"connect": 28232 - 1, "bind": 28232}
