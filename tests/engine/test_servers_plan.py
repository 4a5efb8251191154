"""engine.servers without an engine: the real server's container spec and its compose.yml."""

from types import SimpleNamespace

import yaml

from tcplimits.config.params import RunParams
from tcplimits.engine import servers
from tcplimits.engine.compose import compose_file
from tcplimits.engine.plan import Resolved, container_specs


def prepared(**values):
    params = RunParams.from_mapping(values)
    resolved = Resolved(20000, 2, 5)
    exp = SimpleNamespace(params=params, resolved=resolved, specs=container_specs(
        params, resolved, "rid", "agent-img", "net", {"tcplimits": "1"}, "inst"))
    servers.prepare(exp, "server-img", 2)
    return exp


def test_the_server_runs_hardened_with_tmpfs_where_it_writes():
    exp = prepared(server="redis", maxclients=100)
    spec = exp.specs["server"]
    assert spec["image"] == "server-img" and spec["cap_drop"] == ["ALL"]
    assert spec["read_only"] and spec["user"] == "65534:65534"
    assert spec["security_opt"] == ["no-new-privileges"] and spec["network"] == "net"
    assert "ports" not in spec
    assert set(spec["tmpfs"]) == {"/run", "/var/lib/redis"}
    assert spec["command"][-2:] == ["--maxclients", "100"]
    client = exp.specs["client1"]["command"]
    assert client[client.index("--port") + 1] == "6379"


def test_the_proxy_gets_an_upstream_and_its_own_port_range():
    exp = prepared(server="nginx-proxy", server_port_range="40000-40499")
    assert exp.specs["server"]["sysctls"] == {"net.ipv4.ip_local_port_range": "40000 40499"}
    up = exp.specs["upstream"]
    assert up["image"] == "agent-img" and up["name"].endswith("-upstream")
    assert exp.specs["server"]["command"][-1] == f"{up['name']}:5000"
    doc = yaml.safe_load(servers.fix_compose(compose_file(exp.specs, "rid"), exp.params))
    assert doc["services"]["server"]["command"][-1] == "upstream:5000"
    assert doc["services"]["server"]["depends_on"] == {
        "upstream": {"condition": "service_healthy"}}


def test_nginx_workers_auto_is_one_per_cpu():
    assert servers.workers_of(RunParams.from_mapping({"server": "nginx"}), 2) == 2
    assert servers.workers_of(RunParams.from_mapping({"server": "nginx",
                                                      "worker_processes": 1}), 2) == 1
