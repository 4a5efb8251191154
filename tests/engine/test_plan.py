"""The engine's pure parts: container specs, compose file, refusals, the recorded facts."""

import re

import yaml

from tcplimits import model
from tcplimits.engine import (HARDENING, Resolved, compose_file, container_specs, new_run_id, sweep,
    unsupported_reason)
from tcplimits.config.params import RunParams

PARAMS = RunParams(port_range="40000-40999", nofile=300, procs=2, clients=2, backlog=8)
RESOLVED = Resolved.of(PARAMS, engine_nofile_cap=20000)


def specs():
    return container_specs(PARAMS, RESOLVED, "r1", "tcplimits-agent:abc", "net-r1",
                           {"tcplimits": "1", "tcplimits.run": "r1"})


def test_every_container_runs_with_least_privilege():
    all_specs = specs()
    assert sorted(all_specs) == ["client1", "client2", "server"]
    for spec in all_specs.values():
        assert spec["cap_drop"] == ["ALL"]
        assert spec["security_opt"] == ["no-new-privileges"]
        assert spec["read_only"] is True
        assert spec["user"] == "65534:65534"
        assert "ports" not in spec and "privileged" not in spec
        assert spec["labels"]["tcplimits"] == "1" and spec["labels"]["tcplimits.run"] == "r1"
        assert spec["pids_limit"] <= 64 and spec["mem_limit"] > 0
        assert spec["memswap_limit"] == spec["mem_limit"]  # no swap on top
        assert spec["network"] == "net-r1"


def test_the_server_weighs_as_much_cpu_as_all_client_containers():
    from tcplimits.engine import plan

    assert RESOLVED.server_cpu_shares == 2 * plan.CPU_SHARES
    server = specs()["server"]
    assert server["cpu_shares"] == RESOLVED.server_cpu_shares
    assert all("cpu_shares" not in spec for role, spec in specs().items() if role != "server")
    assert plan.server_cpu_shares(1) == plan.CPU_SHARES
    assert plan.server_cpu_shares(10) == 10 * plan.CPU_SHARES
    assert plan.server_cpu_shares(10_000) == plan.MAX_CPU_SHARES
    service = yaml.safe_load(compose_file(specs(), "r1"))["services"]["server"]
    assert service["cpu_shares"] == RESOLVED.server_cpu_shares


def test_progress_samples_are_bounded_over_the_run():
    from tcplimits.engine import plan

    assert plan.samples_per_process(4) == plan.SAMPLES_PER_PROCESS
    for processes in (10, 70, 100, 640):
        per = plan.samples_per_process(processes)
        assert per >= plan.MIN_SAMPLES_PER_PROCESS
        assert processes * per <= max(plan.SAMPLES_PER_RUN,
                                      processes * plan.MIN_SAMPLES_PER_PROCESS)
    ceiling = RunParams(network="loopback", port_range="1024-65535", nofile=20000, clients=10,
                        procs=10, max_connections=12202)
    resolved = Resolved.of(ceiling, engine_nofile_cap=20000)
    assert 12202 // resolved.sample_every <= plan.SAMPLES_PER_RUN // 100 + 1


def test_helpers_and_probes_are_bounded_too():
    from tcplimits.engine import addresses, compose, plan

    helper = addresses.helper_spec("img", "target", ["10.210.0.70"], 20, {}, "h")
    assert (helper["pids_limit"], helper["mem_limit"], helper["memswap_limit"]) == (
        16, 64 * 2**20, 64 * 2**20)
    assert helper["cap_drop"] == ["ALL"] and helper["cap_add"] == ["NET_ADMIN"]
    service = compose._helper_service({"image": "img", "labels": {}}, "server", ["10.0.0.9"], 20)
    assert {k: service[k] for k in plan.HELPER_LIMITS} == plan.HELPER_LIMITS


def test_clients_get_the_range_and_nofile_asked_for():
    for i in (1, 2):
        spec = specs()[f"client{i}"]
        assert spec["sysctls"] == {"net.ipv4.ip_local_port_range": "40000 40999",
                                   "net.ipv4.tcp_tw_reuse": "2"}
        (ulimit,) = spec["ulimits"]
        assert (ulimit["Name"], ulimit["Soft"], ulimit["Hard"]) == ("nofile", 300, 300)
        cmd = spec["command"]
        assert cmd[cmd.index("--procs") + 1] == "2" and cmd[cmd.index("--client") + 1] == str(i)
        assert "--wait-signal" in cmd


def test_sampling_gives_at_least_one_sample_per_percent():
    per_proc = model.client_terms(PARAMS)[0] / PARAMS.procs
    assert RESOLVED.sample_every <= per_proc / 100


def test_auto_workers_cover_the_clients_demand():
    params = RunParams(port_range="1024-65535", nofile=15000, procs=5, clients=2)
    resolved = Resolved.of(params, engine_nofile_cap=20000)
    demand = 2 * 64512
    assert resolved.server_workers * (20000 - model.SERVER_BASELINE_FDS) > demand
    assert Resolved.of(RunParams(server_workers=3), 20000).server_workers == 3


def test_compose_file_reproduces_the_run():
    doc = yaml.safe_load(compose_file(specs(), "r1"))
    assert doc["networks"]["testnet"]["internal"] is True
    client = doc["services"]["client1"]
    assert client["sysctls"]["net.ipv4.ip_local_port_range"] == "40000 40999"
    assert client["ulimits"]["nofile"] == {"soft": 300, "hard": 300}
    assert client["depends_on"]["server"]["condition"] == "service_healthy"
    assert "--wait-signal" not in client["command"]  # by hand, clients start on their own
    assert client["cap_drop"] == ["ALL"] and client["read_only"] is True
    assert "ports" not in client
    assert doc["services"]["server"]["healthcheck"]["test"][-3:] == ["--check", "--port", "5000"]


def test_compose_file_of_a_run_with_extra_addresses_adds_them_as_the_engine_did():
    from tcplimits.engine import addresses

    params = RunParams(port_range="40000-40999", clients=2, server_addrs=2, client_addrs=2,
                       bind_mode="bind-no-port")
    run_specs = container_specs(params, Resolved.of(params, engine_nofile_cap=20000), "r1",
                                "tcplimits-agent:abc", "net-r1",
                                {"tcplimits": "1", "tcplimits.run": "r1"})
    plan = addresses.plan(params, "10.210.0.0")
    had = {"server": ["10.210.0.2", *plan.extra["server"]],
           "client1": ["10.210.0.3", *plan.extra["client1"]],
           "client2": ["10.210.0.4", *plan.extra["client2"]]}
    doc = yaml.safe_load(compose_file(run_specs, "r1", address_plan=plan, addresses=had,
                                      bind_mode="bind-no-port"))
    assert doc["networks"]["testnet"]["ipam"]["config"] == [
        {"subnet": "10.210.0.0/20", "ip_range": "10.210.0.0/26", "gateway": "10.210.0.1"}]
    services = doc["services"]
    assert sorted(services) == ["client1", "client1-addrs", "client2", "client2-addrs",
                                "server", "server-addrs"]
    for role, addrs in had.items():
        assert services[role]["networks"] == {"testnet": {"ipv4_address": addrs[0]}}
        helper = services[f"{role}-addrs"]  # the engine's helper: NET_ADMIN only, once
        assert helper["network_mode"] == f"service:{role}"
        assert helper["command"][-1] == f"{addrs[1]}/20"
        assert helper["cap_drop"] == ["ALL"] and helper["cap_add"] == ["NET_ADMIN"]
        assert helper["security_opt"] == ["no-new-privileges"] and helper["read_only"]
        assert helper["labels"]["tcplimits"] == "1" and helper["labels"]["tcplimits.run"] == "r1"
    client = services["client1"]["command"]
    assert client[client.index("--server") + 1] == ",".join(had["server"])
    assert client[client.index("--sources") + 1] == had["client1"][1]
    assert "--wait-sources" in client  # its helper adds them after it starts
    assert services["client1"]["depends_on"]["server-addrs"] == {
        "condition": "service_completed_successfully"}
    # plain connect() does not bind the extra sources, so it does not wait for them
    plain = yaml.safe_load(compose_file(run_specs, "r1", address_plan=plan, addresses=had))
    assert "--sources" not in plain["services"]["client1"]["command"]
    # a run that failed before every container had its addresses: the plain file
    partial = yaml.safe_load(compose_file(run_specs, "r1", address_plan=plan,
                                          addresses={"server": had["server"]}))
    assert sorted(partial["services"]) == ["client1", "client2", "server"]
    assert "ipam" not in partial["networks"]["testnet"]


def test_unsupported_reason_says_what_to_do():
    assert unsupported_reason(RunParams(nofile=20000), 20000) is None
    reason = unsupported_reason(RunParams(nofile=100000), 20000)
    assert reason.startswith("engine allows nofile up to 20000; asked 100000; use more --procs")
    assert "--procs 5 --nofile 20000" in reason
    assert "--server-nofile" in unsupported_reason(RunParams(server_nofile=30000), 20000)


def test_run_ids_are_stable_per_parameters_and_readable():
    a, b = new_run_id(PARAMS), new_run_id(RunParams())
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", a)
    assert a[-6:] != b[-6:] and new_run_id(PARAMS)[-6:] == a[-6:]


def test_run_facts_record_held_sockets_with_owner_somaxconn_and_workers():
    from tcplimits.engine.events import RunState
    from tcplimits.engine.record import run_facts

    state = RunState()
    state.take("client1", {"event": "ready", "client": 1, "held": [
        {"addr": "127.0.0.11", "port": 43995, "state": "LISTEN"}]})
    state.take("client2", {"event": "ready", "client": 2, "held": [
        {"addr": "10.0.0.9", "port": 40001, "state": "ESTABLISHED"}]})
    state.take("server", {"event": "listening", "port": 5000, "backlog": 128, "somaxconn": 512})
    state.take("server", {"event": "result", "worker": 1, "accepted": 997, "errno": 24,
                          "error": "EMFILE", "message": "Too many open files",
                          "accept_errors": 3, "listen_drops": 7})
    facts = run_facts(state)
    assert facts == {
        "held_sockets": {
            "1": [{"addr": "127.0.0.11", "port": 43995, "state": "LISTEN", "owner": "docker-dns"}],
            "2": [{"addr": "10.0.0.9", "port": 40001, "state": "ESTABLISHED", "owner": None}]},
        "somaxconn": 512,
        "listen_drops": 7,
        "server_workers": [{"worker": 1, "accepted": 997, "errno": 24, "error": "EMFILE",
                            "message": "Too many open files", "accept_errors": 3}],
    }


def test_hardening_is_one_definition_for_agents_and_compose():
    doc = yaml.safe_load(compose_file(specs(), "r1"))
    for role, spec in specs().items():
        for key, value in HARDENING.items():
            assert spec[key] == value and doc["services"][role][key] == value


class _FakeResource:
    def __init__(self, labels):
        self.attrs = {"Labels": labels}
        self.removed = False

    def remove(self, **_):
        self.removed = True


class _FakeCollection:
    def __init__(self, items):
        self.items = items

    def list(self, **_):
        return self.items


def test_sweep_removes_only_resources_of_provably_dead_owners():
    import socket

    from tcplimits.engine import ownership

    me = ownership.current()
    dead = _FakeResource({"tcplimits": "1", "tcplimits.owner": ownership.Owner(
        me.boot_id, me.pid_ns, 999999999, 1).label()})
    alive = _FakeResource({"tcplimits": "1", "tcplimits.owner": me.label()})
    unowned = _FakeResource({"tcplimits": "1"})
    old_style = _FakeResource({"tcplimits": "1",
                               "tcplimits.owner": f"{socket.gethostname()}:999999999"})
    other_ns = _FakeResource({"tcplimits": "1", "tcplimits.owner": ownership.Owner(
        me.boot_id, "4:1", 999999999, 1).label()})

    class Client:
        containers = _FakeCollection([dead, alive, unowned, old_style, other_ns])
        networks = _FakeCollection([])

    assert sweep(Client()) == {"containers": 1, "networks": 0}
    assert dead.removed
    assert not any(r.removed for r in (alive, unowned, old_style, other_ns))
    assert sweep(Client(), everything=True)["containers"] == 5


def test_auto_workers_beyond_the_bound_are_refused_not_lowered():
    params = RunParams(port_range="1024-65535", nofile=15000, procs=5, clients=32,
                       server_nofile=100)
    resolved = Resolved.of(params, 20000)
    reason = unsupported_reason(params, 20000, resolved)
    assert reason.startswith(f"server_workers auto needs {resolved.server_workers} workers")
    assert unsupported_reason(PARAMS, 20000, RESOLVED) is None


def test_names_of_one_run_instance_never_repeat():
    a = container_specs(PARAMS, RESOLVED, "r1", "img", "net", {}, instance="aaaa")
    b = container_specs(PARAMS, RESOLVED, "r1", "img", "net", {}, instance="bbbb")
    assert {s["name"] for s in a.values()}.isdisjoint(s["name"] for s in b.values())


def test_a_dead_client_process_is_noticed():
    from tcplimits.engine.events import RunState

    state = RunState()
    state.take("client1", {"event": "worker_exit", "client": 1, "pid": 7, "code": -9})
    assert state.died == ["client1 process pid 7 killed by SIGKILL before reporting"]
    state.take("server", {"event": "worker_exit", "worker": 2, "pid": 9, "code": 1})
    assert state.died[1] == "server worker 2 pid 9 exited with code 1 before reporting"


def test_cleanup_finishes_before_a_signal_is_raised():
    import os
    import signal

    import pytest

    from tcplimits.engine.cleanup import shielded

    done = []
    with pytest.raises(KeyboardInterrupt):
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("cleaned")  # still runs: the signal waits for the block's end
    assert done == ["cleaned"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_churn_points_pass_mode_rate_duration_closer_and_tw_reuse():
    params = RunParams(port_range="40000-40999", mode="churn", rate=500, duration=20,
                       closer="server", tw_reuse=1)
    plan = container_specs(params, Resolved.of(params, 20000), "r1", "img", "net-r1",
                           {"tcplimits": "1", "tcplimits.run": "r1"})
    cmd = plan["client1"]["command"]
    assert cmd[cmd.index("--mode") + 1] == "churn" and cmd[cmd.index("--rate") + 1] == "500"
    assert cmd[cmd.index("--duration") + 1] == "20" and cmd[cmd.index("--closer") + 1] == "server"
    assert plan["client1"]["sysctls"]["net.ipv4.tcp_tw_reuse"] == "1"
    assert "--churn" in plan["server"]["command"]
    assert "--mode" not in specs()["client1"]["command"] and "--churn" not in specs()["server"]["command"]


def nat_compose_doc(params=None) -> tuple[dict, dict]:
    """A nat gateway run's compose file, made as the runner makes it (the router's spec from
    engine.nat.router_spec), and the addresses the run had."""
    import types

    from tcplimits.engine import addresses, nat

    params = params or RunParams(port_range="40000-40199", nofile=1000, clients=2,
                                 nat="gateway", nat_port_range="40000-40099")
    labels = {"tcplimits": "1", "tcplimits.run": "r1"}
    run_specs = container_specs(params, Resolved.of(params, engine_nofile_cap=20000), "r1",
                                "tcplimits-agent:abc", "net-r1", labels)
    plan = addresses.plan(params, "10.210.0.0")
    had = {"server": ["10.210.0.2", *plan.extra["server"]],
           **{f"client{c}": [f"10.210.0.{2 + c}", *plan.extra[f"client{c}"]]
              for c in range(1, params.clients + 1)}}
    ex = types.SimpleNamespace(params=params, network_name="net-r1", labels=labels)
    router = nat.router_spec(ex, "tcplimits-router:abc", plan.subnet,
                             plan.extra.get("router", []), had["server"])
    text = compose_file(run_specs, "r1", address_plan=plan, addresses=had,
                        bind_mode=params.bind_mode,
                        router={"spec": router, "address": "10.210.0.9"})
    return yaml.safe_load(text), had


def test_compose_file_of_a_nat_run_has_the_router_and_the_routes():
    from tcplimits.engine import addresses

    assert addresses.needs_extra(RunParams(nat="gateway"))  # its subnet is pinned
    doc, had = nat_compose_doc()
    services = doc["services"]
    assert sorted(services) == ["client1", "client1-route", "client2", "client2-route",
                                "router", "server"]
    router = services["router"]
    assert router["image"] == "tcplimits-router:abc"
    assert router["networks"] == {"testnet": {"ipv4_address": "10.210.0.9"}}
    # root with NET_ADMIN alone; every other hardening kept
    assert router["user"] == "0:0" and router["cap_add"] == ["NET_ADMIN"]
    assert router["cap_drop"] == ["ALL"] and router["security_opt"] == ["no-new-privileges"]
    assert router["read_only"] is True and router["tmpfs"] == ["/run:size=1m"]
    assert router["sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert router["memswap_limit"] == router["mem_limit"] and router["pids_limit"] == 16
    assert "ports" not in router and router["labels"]["tcplimits.run"] == "r1"
    cmd = router["command"]  # the engine's command: the rule names the run's addresses
    assert cmd[cmd.index("--dest") + 1] == "10.210.0.2"
    assert cmd[cmd.index("--server-subnet") + 1] == "10.210.0.0/20"
    assert cmd[cmd.index("--to-ports") + 1] == "40000-40099"
    assert router["healthcheck"]["test"][-1] == "--check"
    for c in (1, 2):
        client, route = services[f"client{c}"], services[f"client{c}-route"]
        assert client["depends_on"]["router"] == {"condition": "service_healthy"}
        command = client["command"]
        assert command[command.index("--wait-route") + 1] == "10.210.0.9"
        assert route["network_mode"] == f"service:client{c}"
        assert route["command"][-4:] == ["route", "via", "10.210.0.9", "10.210.0.2/32"]
        assert route["cap_drop"] == ["ALL"] and route["cap_add"] == ["NET_ADMIN"]
        assert route["user"] == "0:0" and route["read_only"] is True


def test_compose_file_of_a_nat_run_is_valid_for_compose_v1(tmp_path):
    import shutil
    import subprocess

    compose = shutil.which("docker-compose")
    if compose is None:
        import pytest

        pytest.skip("no docker-compose (scripts/bootstrap.sh --test installs it)")
    doc, _ = nat_compose_doc(RunParams(port_range="40000-40199", nofile=1000, clients=2,
                                       nat_addrs=2, nat="gateway", nat_port_range="40000-40099"))
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = subprocess.run([compose, "-f", str(path), "config", "-q"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
