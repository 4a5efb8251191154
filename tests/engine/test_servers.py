"""Real servers on the Docker engine (issue 21): Redis, nginx and nginx as a TCP proxy at small
limits hold what tcplimits.model.servers predicts, and the clients see what the model says.
The server image is built once (Debian's packages, through the offline base) if missing."""

import json

import polars as pl
import pytest

from tcplimits import results
from tcplimits.model import servers as server_model
from tests.engine.helpers import run_ok

pytestmark = [pytest.mark.docker, pytest.mark.servers]


def run(engine, tmp_path, name, **values):
    """A real-server run (helpers.run_ok) with its clients' rows and its realserver row."""
    values.setdefault("quiet_host_timeout", 5)
    record = run_ok(engine, tmp_path / name, **values)
    clients = pl.read_parquet(tmp_path / name / results.CLIENTS_FILE)
    realserver = pl.read_parquet(tmp_path / name / results.REALSERVER_FILE)
    assert realserver.height == 1
    return record, clients.to_dicts(), realserver.row(0, named=True)


def test_redis_holds_maxclients_and_closes_the_rest_with_its_message(engine, tmp_path):
    record, clients, row = run(engine, tmp_path, "redis", server="redis", maxclients=20,
                               port_range="40000-40199")
    (c,) = clients
    assert c["connections"] == 20
    assert c["error"] == "EADDRNOTAVAIL"  # the clients' own pool: closed sockets keep ports
    assert c["closed_by_peer"] == c["opened"] - 20 > 150
    assert c["peer_message"].strip() == server_model.REDIS_MESSAGE
    assert json.loads(row["effective"])["maxclients"] == "20"
    assert row["agrees"] and row["bound"] == server_model.MAXCLIENTS
    assert row["established"] == 20
    assert record["server"]["package_version"] and "7." in record["server"]["version"]
    # the privileges it ran with
    assert record["privileges"]["agents"]["server"]["cap_drop"] == ["ALL"]


def test_nginx_worker_holds_its_slots_less_what_it_drains(engine, tmp_path):
    record, clients, row = run(engine, tmp_path, "nginx", server="nginx",
                               worker_connections=64, worker_processes=1,
                               port_range="40000-40299")
    (c,) = clients
    low, high = server_model.nginx_http_range(64, server_model.nginx_listeners("nginx"))
    assert (low, high) == (51, 57)
    assert low <= c["connections"] <= high
    assert c["error"] == "EADDRNOTAVAIL"  # nginx keeps accepting: no SYN waits, none times out
    assert c["closed_by_peer"] == c["opened"] - c["connections"]
    assert c["peer_message"] is None
    assert "worker_connections are not enough" in row["limit_log"]
    assert row["agrees"] and row["workers"] == 1


def test_proxy_upstream_stops_at_its_port_range_and_clients_see_a_close(engine, tmp_path):
    # "_" as in the workflow's point ids: nginx must not resolve the upstream by its name
    record, clients, row = run(engine, tmp_path, "proxy_upstream", server="nginx-proxy",
                               server_port_range="40000-40099", port_range="40000-40299")
    (c,) = clients
    # Docker's DNS listener may hold one port of the proxy's range
    assert 99 <= c["connections"] <= 100
    assert row["upstream"] == c["connections"] == row["upstream_accepted"]
    assert c["closed_by_peer"] == c["opened"] - c["connections"] > 150
    assert c["peer_message"] is None
    assert "(99: Cannot assign requested address)" in row["limit_log"]
    assert row["bound"] == server_model.UPSTREAM_PORTS and row["agrees"]
