"""Real-server parameters (issue 21): accepted where the server reads them, refused elsewhere
with a one-line error naming the key and the value."""

import pytest

from tcplimits.config.params import ParamError, RunParams


def test_each_server_takes_its_own_settings():
    p = RunParams.from_mapping({"server": "nginx", "worker_connections": "64",
                                "worker_processes": 1})
    assert (p.server, p.worker_connections, p.worker_processes, p.real_server) == (
        "nginx", 64, 1, True)
    assert RunParams.from_mapping({"server": "redis", "maxclients": 100}).maxclients == 100
    assert RunParams.from_mapping({"server": "nginx-proxy",
                                   "server_port_range": "40000 40499"}).server_port_range == \
        "40000-40499"
    assert not RunParams().real_server


@pytest.mark.parametrize("values, words", [
    ({"maxclients": 10}, "--maxclients=10: applies to server redis only"),
    ({"server": "redis", "worker_connections": 64}, "applies to server nginx or nginx-proxy"),
    ({"server": "nginx", "server_port_range": "40000-40499"}, "server nginx-proxy only"),
    ({"server": "nginx", "backlog": 8}, "--backlog=8: applies to server agent only"),
    ({"server": "redis", "network": "loopback"}, "needs network bridge"),
    ({"server": "redis", "mode": "churn"}, "mode hold only"),
    ({"server": "apache"}, "--server='apache': expected one of agent, nginx"),
    ({"server": "nginx", "worker_connections": 4}, "must be at least 8"),
    ({"server": "nginx-proxy", "server_port_range": "900-1000"}, "below 1024"),
])
def test_refused_before_any_container_starts(values, words):
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping(values, flag_names=True)
    assert words in str(err.value) and "\n" not in str(err.value)
