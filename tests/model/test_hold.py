"""The prediction model: what a point should hold and why (pure, no Docker)."""

from __future__ import annotations

import pytest

from tcplimits import model
from tcplimits.config.params import RunParams


def _predict(server_nofile=20000, server_workers=4, **values):
    return model.predict(RunParams.from_mapping(values), server_nofile=server_nofile,
                         server_workers=server_workers)


# --- predict ------------------------------------------------------------------------------

def test_seed_default_range_is_port_bound():
    p = _predict(port_range="32768-60999", nofile=100000)
    assert (p.total, p.limit, p.errno) == (28232, model.PORTS, "EADDRNOTAVAIL")


def test_wide_range_holds_64512():
    assert _predict(port_range="1024-65535", nofile=15000, procs=5).total == 64512


def test_held_port_shrinks_the_pool():
    p = model.predict(RunParams(port_range="40000-40999"), server_nofile=20000,
                      server_workers=1, held_ports=[1])
    assert p.per_client == [999]


def test_descriptors_leave_three_for_stdio():
    p = _predict(nofile=300)
    assert (p.total, p.limit, p.errno) == (297, model.DESCRIPTORS, "EMFILE")


def test_processes_add_descriptors_not_ports():
    p = _predict(port_range="40000-40999", nofile=600, procs=2)
    assert (p.total, p.limit) == (1000, model.PORTS)


def test_server_bound_clients_count_the_accept_queue():
    p = _predict(clients=2, server_nofile=1024, server_workers=1, backlog=128)
    assert (p.limit, p.server_accepted, p.total) == (model.SERVER, 1020, 1020 + 129)
    assert sum(p.per_client) == p.total


def test_conntrack_caps_everything():
    p = model.predict(RunParams(clients=4), server_nofile=20000, server_workers=8,
                      conntrack_max=50000)
    assert (p.limit, p.total, p.errno) == (model.CONNTRACK, 50000, "ETIMEDOUT")


@pytest.mark.parametrize("values,limit,words", [
    ({"nofile": 300}, model.DESCRIPTORS, "nofile - 3 = 297 sockets"),
    ({"port_range": "40000-40999"}, model.PORTS, "the 1,000 ports of 40000-40999"),
    ({"max_connections": 50}, model.MAX_CONNECTIONS, "at 50 connections"),
    ({"clients": 2, "server_nofile": 1024, "server_workers": 1, "backlog": 128}, model.SERVER,
     "accepts 1,020 and queues 129 more"),
])
def test_limit_reason_says_where_the_number_comes_from(values, limit, words):
    params = RunParams.from_mapping(values)
    p = model.predict(params, server_nofile=params.server_nofile or 20000,
                      server_workers=params.server_workers if params.server_workers != "auto"
                      else 4)
    assert p.limit == limit
    assert words in model.limit_reason(params, p)
    assert model.limit_reason(params, p.to_dict()) == model.limit_reason(params, p)


def test_dropped_syns_make_times_suspect_unless_the_server_is_the_limit():
    assert model.dropped_syns_reason(None, model.PORTS) is None
    assert model.dropped_syns_reason(0, model.PORTS) is None
    assert model.dropped_syns_reason(12, model.SERVER) is None  # what a server-bound point measures
    reason = model.dropped_syns_reason(3, model.PORTS)
    assert "3 SYNs" in reason and "ListenDrops" in reason and "--backlog" in reason
    assert "1 SYN " in model.dropped_syns_reason(1, model.DESCRIPTORS)
