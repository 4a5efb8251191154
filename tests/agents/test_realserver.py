"""The real-server agent's pure parts: the configuration it writes, the log kinds it keeps."""

import pytest

from tcplimits.agents import realserver

DEBIAN = """user www-data;
worker_processes auto;
pid /run/nginx.pid;
events {
\tworker_connections 768;
\t# multi_accept on;
}
http {
}
"""


def test_overrides_replace_debians_directives_and_nothing_else():
    out = realserver.nginx_config(DEBIAN, kind="nginx", port=80, worker_connections=64,
                                  worker_processes=1)
    assert "worker_connections 64;" in out and "worker_processes 1;" in out
    assert out.replace("64;", "768;", 1).replace("processes 1;", "processes auto;") == DEBIAN
    assert realserver.nginx_config(DEBIAN, kind="nginx", port=80) == DEBIAN


def test_proxy_adds_a_stream_server():
    out = realserver.nginx_config(DEBIAN, kind="nginx-proxy", port=5000, upstream="up:5000")
    assert "listen 5000;" in out and "proxy_pass up:5000;" in out


def test_a_missing_directive_is_an_error():
    with pytest.raises(ValueError, match="worker_connections"):
        realserver.nginx_config("events {}\n", kind="nginx", port=80, worker_connections=8)


def test_log_kinds_keep_the_first_line_and_count(capsys):
    log = realserver.LogKinds()
    for n in (7, 8, 9):
        log.take(f"2026/12/02 19:52:54 [crit] 11#11: *{n} connect() to 192.168.32.2:5000 "
                 "failed (99: Cannot assign requested address) while connecting to upstream")
    (entry,) = log.summary()
    assert entry["count"] == 3 and "*7 " in entry["line"]


def test_redis_command_keeps_debians_file():
    args = realserver.redis_args("/etc/redis/redis.conf", 100)
    assert args[:2] == ["redis-server", "/etc/redis/redis.conf"]
    assert args[-2:] == ["--maxclients", "100"]
