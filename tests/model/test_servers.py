"""tcplimits.model.servers: each real server's bound, from its effective configuration."""

import pytest

from tcplimits.model import servers as m


def test_nginx_http_worker_range_matches_what_was_measured():
    # measured (1 worker, 64 slots): held rises to 57, then drops to 51 as nginx drains 7
    assert m.nginx_http_range(64, m.nginx_listeners("nginx")) == (51, 57)
    # Debian's default: 768 - 2 listeners - 1 channel - 48 kept free = 717; drains 32
    assert m.nginx_http_range(768, 2) == (686, 717)


def test_nginx_proxy_takes_two_slots_per_connection():
    assert m.nginx_listeners("nginx-proxy") == 3
    assert m.nginx_proxy_sessions(768, 3) == 382
    assert m.nginx_proxy_sessions(64, 3) == 30


def test_redis_lowers_maxclients_to_the_descriptor_limit_minus_32():
    assert m.redis_maxclients(None, 20000) == 10000
    assert m.redis_maxclients(None, 1024) == 992
    assert m.redis_maxclients(100, 20000) == 100


def test_redis_past_maxclients_closes_with_its_message():
    p = m.predict_server("redis", 1000, workers=1, maxclients=100, server_nofile=20000)
    assert (p.low, p.high, p.bound, p.closed) == (100, 100, m.MAXCLIENTS, (900, 900))
    assert p.message == m.REDIS_MESSAGE and p.log is None


def test_clients_bound_first_when_the_server_has_room():
    p = m.predict_server("redis", 50, workers=1, maxclients=100, server_nofile=20000)
    assert (p.low, p.high, p.bound, p.closed, p.message) == (50, 50, m.CLIENTS, (0, 0), None)


def test_nginx_one_worker_is_exact_several_are_a_range():
    one = m.predict_server("nginx", 1000, workers=1, worker_connections=64, server_nofile=20000)
    assert (one.low, one.high, one.bound) == (51, 57, m.WORKER_CONNECTIONS)
    two = m.predict_server("nginx", 5000, workers=2, server_nofile=20000)
    assert (two.low, two.high) == (2 * 686, 2 * 717)
    few = m.predict_server("nginx", 1000, workers=2, server_nofile=20000)
    assert few.low == 686 and few.high == 1000  # workers fill unevenly


def test_proxy_upstream_pool_or_worker_slots():
    pool = m.predict_server("nginx-proxy", 1000, workers=2, server_nofile=20000,
                            upstream_pool=500)
    assert (pool.low, pool.high, pool.bound) == (499, 500, m.UPSTREAM_PORTS)
    assert "Cannot assign requested address" in pool.log
    slots = m.predict_server("nginx-proxy", 1000, workers=1, worker_connections=64,
                             server_nofile=20000, upstream_pool=28232)
    assert (slots.low, slots.high, slots.bound) == (30, 30, m.WORKER_CONNECTIONS)
    shipped = m.predict_server("nginx-proxy", 4999, workers=2, server_nofile=20000,
                               upstream_pool=28232)
    assert (shipped.low, shipped.high) == (764, 764)
    few = m.predict_server("nginx-proxy", 1000, workers=2, server_nofile=20000,
                           upstream_pool=28232)
    assert (few.low, few.high) == (382, 764)


def test_judge_explains_closed_connections_and_quotes_the_log():
    p = m.predict_server("redis", 1000, workers=1, maxclients=100, server_nofile=20000)
    v = m.judge(p, 100, 1000, 900, m.REDIS_MESSAGE + "\r\n")
    assert v.agrees
    assert any("900 connection(s) were accepted and then closed" in w for w in v.explanations)
    off = m.judge(p, 120, 1000, 880, None)
    assert not off.agrees and any("not explained" in w for w in off.explanations)
    assert any("expected to say" in w for w in off.explanations)


def test_limit_line_finds_the_servers_own_words():
    log = [{"line": "... [warn] 10#10: 64 worker_connections are not enough, reusing "
                    "connections", "count": 3}]
    assert m.limit_line(log, m.WORKER_CONNECTIONS)["count"] == 3
    assert m.limit_line(log, m.MAXCLIENTS) is None


def test_unknown_server_is_refused():
    with pytest.raises(ValueError):
        m.predict_server("agent", 10, workers=1, server_nofile=100)
