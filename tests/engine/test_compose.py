"""A run's exported compose.yml runs as a new user would run it, with whichever Compose is
installed (Debian's docker-compose 1.29 is v1; `docker compose` is v2), and reproduces the
run: each client holds what the run's own clients held, give or take the ports Docker's DNS
listener happened to take from the range in each namespace."""

import json
import shutil
import subprocess
import time
import uuid

import docker
import polars as pl
import pytest

from tcplimits import ROLE_LABEL, results
from tcplimits.engine import compose_project, run_experiment
from tcplimits.engine.plan import server_cpu_shares
from tcplimits.config.params import RunParams

pytestmark = pytest.mark.docker


def compose_command() -> list[str] | None:
    """v2 when the docker CLI has the plugin, else v1; None when neither is installed."""
    docker_cli = shutil.which("docker")
    if docker_cli and subprocess.run([docker_cli, "compose", "version"], capture_output=True,
                                     timeout=30).returncode == 0:
        return [docker_cli, "compose"]
    return [shutil.which("docker-compose")] if shutil.which("docker-compose") else None


def client_events(compose: list[str], role: str) -> dict[str, list[dict]]:
    """The JSON events of one service's output, by kind (the log prefix is Compose's own)."""
    out = subprocess.run(compose + ["logs", "--no-color", role], capture_output=True,
                         text=True, timeout=60).stdout
    events: dict[str, list[dict]] = {}
    for line in out.splitlines():
        if "{" in line:
            try:
                event = json.loads(line[line.index("{"):])
            except json.JSONDecodeError:
                continue
            events.setdefault(event.get("event"), []).append(event)
    return events


def labelled(client, run_id):
    label = ["tcplimits=1", f"tcplimits.run={run_id}"]
    return ([c.name for c in client.containers.list(all=True, sparse=True,
                                                    filters={"label": label})],
            [n.name for n in client.networks.list(filters={"label": label})])


@pytest.mark.parametrize("params", [
    RunParams(port_range="40000-40299", nofile=1000, clients=2),
    # extra addresses: the file pins the run's subnet and adds them with helper services
    RunParams(port_range="40000-40299", nofile=2000, server_addrs=2, client_addrs=2,
              bind_mode="bind-no-port"),
], ids=["two-clients", "extra-addresses"])
def test_exported_compose_file_reproduces_the_run(tmp_path, params):
    base = compose_command()
    if base is None:
        pytest.skip("no Compose installed (scripts/bootstrap.sh --test installs docker-compose)")
    engine = docker.from_env()
    run_id = f"compose-{uuid.uuid4().hex[:6]}"  # other checkouts run this test at the same time
    run_dir = tmp_path / run_id
    record = run_experiment(params, run_dir, run_id=run_id, progress=False, client=engine,
                            log=lambda m: None)
    assert record["status"] == results.STATUS_OK, record["reason"]
    run_clients = (pl.read_parquet(run_dir / results.CLIENTS_FILE).group_by("client")
                   .agg(pl.col("connections").sum(), pl.col("error").first()))
    held_in_run = {int(c): len(s) for c, s in record["facts"]["held_sockets"].items()}

    text = (run_dir / results.COMPOSE_FILE).read_text()
    assert "\nname:" not in text and not text.startswith("name:")  # Compose v1 refuses it
    compose = base + ["-p", compose_project(run_id), "-f", str(run_dir / results.COMPOSE_FILE)]
    up = subprocess.run(compose + ["up", "-d"], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        found: dict[int, dict[str, list[dict]]] = {}
        deadline = time.monotonic() + 120
        while len(found) < params.clients and time.monotonic() < deadline:
            for i in range(1, params.clients + 1):
                events = client_events(compose, f"client{i}")
                if len(events.get("result", [])) == params.procs:
                    found[i] = events
            time.sleep(1)
        assert len(found) == params.clients, f"results of clients {sorted(found)} only"
        pairs = params.server_addrs * params.client_addrs  # (source, destination) pools
        for row in run_clients.iter_rows(named=True):
            c = row["client"]
            (ready,), (result,) = found[c]["ready"], found[c]["result"]
            assert result["error"] == row["error"] == "EADDRNOTAVAIL"
            # the same destinations and sources as the run's clients had
            assert len(ready["servers"]) == params.server_addrs
            assert 1 + len(ready["sources"]) == params.client_addrs
            # Port bound: each pair's pool is the range minus the ports held in that
            # namespace, in the run and by hand alike.
            if pairs == 1:
                assert result["connections"] == params.port_count - len(ready["held"])
                assert row["connections"] == params.port_count - held_in_run[c]
            assert abs(result["connections"] - row["connections"]) <= pairs
            assert result["connections"] > (pairs - 1) * params.port_count
        # The hand-made containers run as hardened and labelled as the engine's; the helpers
        # that added the extra addresses hold NET_ADMIN and nothing else.
        containers = engine.containers.list(all=True, filters={
            "label": f"com.docker.compose.project={compose_project(run_id)}"})
        helpers = [c for c in containers if c.labels.get(ROLE_LABEL) == "netadmin"]
        assert len(helpers) == (params.clients + 1 if pairs > 1 else 0)
        assert len(containers) == params.clients + 1 + len(helpers)
        for container in containers:
            host, config = container.attrs["HostConfig"], container.attrs["Config"]
            assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
            assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"]
            assert not host["PortBindings"]
            if container in helpers:
                assert host["CapAdd"] == ["NET_ADMIN"] and container.attrs["State"]["ExitCode"] == 0
            else:
                assert config["User"] == "65534:65534" and not host["CapAdd"]
            assert config["Labels"]["tcplimits"] == "1"
            assert config["Labels"]["tcplimits.run"] == run_id
            # the server weighs as much CPU as every client container together
            if container.labels.get(ROLE_LABEL) == "server":
                assert host["CpuShares"] == server_cpu_shares(params.clients)
    finally:
        down = subprocess.run(compose + ["down", "-v", "--timeout", "10"], capture_output=True,
                              text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert labelled(engine, run_id) == ([], []), "compose down left labelled resources"


def test_exported_compose_file_reproduces_a_nat_run(tmp_path):
    """Two clients behind one NAT address of 100 ports: the compose file brings up the router
    and each client's route as the engine did, and the clients hold the pool's 100 together
    again, stopped by the NAT (ETIMEDOUT); `down` leaves nothing."""
    base = compose_command()
    if base is None:
        pytest.skip("no Compose installed (scripts/bootstrap.sh --test installs docker-compose)")
    engine = docker.from_env()
    run_id = f"compose-nat-{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / run_id
    params = RunParams(port_range="40000-40199", nofile=1000, clients=2, nat="gateway",
                       nat_port_range="40000-40099", quiet_host_timeout=5)
    record = run_experiment(params, run_dir, run_id=run_id, progress=False, client=engine,
                            log=lambda m: None)
    assert record["status"] == results.STATUS_OK, record["reason"]
    assert record["totals"]["connections"] == 100

    path = run_dir / results.COMPOSE_FILE
    compose = base + ["-p", compose_project(run_id), "-f", str(path)]
    checked = subprocess.run(compose + ["config", "-q"], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
    up = subprocess.run(compose + ["up", "-d"], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        found: dict[int, dict] = {}
        deadline = time.monotonic() + 120
        while len(found) < params.clients and time.monotonic() < deadline:
            for i in range(1, params.clients + 1):
                (result, *_) = client_events(compose, f"client{i}").get("result", [None])
                if result is not None:
                    found[i] = result
            time.sleep(1)
        assert len(found) == params.clients, f"results of clients {sorted(found)} only"
        assert sum(r["connections"] for r in found.values()) == 100
        assert {r["error"] for r in found.values()} == {"ETIMEDOUT"}
        containers = engine.containers.list(all=True, filters={
            "label": f"com.docker.compose.project={compose_project(run_id)}"})
        roles = sorted(c.labels.get(ROLE_LABEL) for c in containers)
        assert roles == ["client", "client", "netadmin", "netadmin", "router", "server"]
        for container in containers:
            host, config = container.attrs["HostConfig"], container.attrs["Config"]
            assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
            assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"]
            assert not host["PortBindings"]
            assert config["Labels"]["tcplimits.run"] == run_id
            if container.labels.get(ROLE_LABEL) in ("router", "netadmin"):
                assert host["CapAdd"] == ["NET_ADMIN"] and config["User"] == "0:0"
            else:
                assert config["User"] == "65534:65534" and not host["CapAdd"]
        (router,) = [c for c in containers if c.labels.get(ROLE_LABEL) == "router"]
        assert router.attrs["HostConfig"]["Sysctls"] == {"net.ipv4.ip_forward": "1"}
        assert router.attrs["State"]["Health"]["Status"] == "healthy"
    finally:
        down = subprocess.run(compose + ["down", "-v", "--timeout", "10"], capture_output=True,
                              text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert labelled(engine, run_id) == ([], []), "compose down left labelled resources"
