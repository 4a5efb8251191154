"""Real servers on the engine (issue 21): the server container runs nginx or Redis from the
server image (tcplimits.image.servers) under the realserver agent; nginx-proxy adds an
"upstream" container, an agent server, that nginx proxies to.

Hooks the run calls: ``prepare`` (after the Experiment is made: swaps the server's spec, adds
the upstream, points the clients at the server's port), ``start_upstream`` (before the server
starts: nginx resolves its upstream when it loads its configuration), ``complete`` (after
the run: run.json's "server" block) and ``rows`` (realserver.parquet).

Hardening as the agents': cap_drop ALL, no-new-privileges, read-only root, user 65534, the
run's internal network, no published ports. Where the server writes (its pid file, logs and
temp files, the effective configuration) a tmpfs owned by that user.
"""

from __future__ import annotations

import json
import queue
import time
from typing import Any

from docker.types import Ulimit

from tcplimits import ROLE_LABEL
from tcplimits.config.params import RunParams, port_count
from tcplimits.engine.events import LogReader, RunState
from tcplimits.engine.plan import AGENTS, SERVER_PORT, hardening, memory_limit
from tcplimits.model import servers as server_model

UPSTREAM = "upstream"
# Where each server writes: tmpfs, owned by the containers' user (this engine ignores a
# tmpfs mode; uid and gid it honours).
_TMPFS_OPTS = "uid=65534,gid=65534,size=64m"
TMPFS = {
    "nginx": ["/run", "/var/log/nginx", "/var/lib/nginx"],
    "nginx-proxy": ["/run", "/var/log/nginx", "/var/lib/nginx"],
    "redis": ["/run", "/var/lib/redis"],
}
UPSTREAM_READY_S = 60
SERVER_EXTRA_MEMORY = 512 * 2**20


def workers_of(params: RunParams, cpus: int) -> int:
    """nginx's worker processes in force (auto: one per CPU the engine has); Redis: 1."""
    if params.server == "redis":
        return 1
    return params.worker_processes or max(1, cpus)


def server_command(params: RunParams, upstream: str | None) -> list[str]:
    cmd = ["python3", f"{AGENTS}/realserver.py", "--kind", params.server,
           "--port", str(server_model.PORTS[params.server])]
    for name in ("worker_connections", "worker_processes", "maxclients"):
        if getattr(params, name) is not None:
            cmd += ["--" + name.replace("_", "-"), str(getattr(params, name))]
    if upstream:
        cmd += ["--upstream", f"{upstream}:{SERVER_PORT}"]
    return cmd


def image_for(params: RunParams, client, log) -> str | None:
    """The server image's tag for a real server (built if missing), else None."""
    if not params.real_server:
        return None
    from tcplimits.image.servers import ensure_server_image

    return ensure_server_image(client, log=log).tags[0]


def complete(record: dict[str, Any], experiment, clients: list[dict]) -> None:
    """run.json's "server" block and the server model's prediction, for a real server."""
    params: RunParams = experiment.params
    if not params.real_server:
        return
    held = (record.get("facts") or {}).get("held_sockets") or {}
    from tcplimits.model import client_terms

    demand = sum(client_terms(params, held.get(str(c), []))[0]
                 for c in range(1, params.clients + 1))
    record["server"] = server_block(experiment, experiment.state, clients, demand)
    record["prediction"].update(prediction_update(record["server"]))


def rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """realserver.parquet's rows: one for a real server, none for the agent."""
    return [row(record["run_id"], record["server"])] if record.get("server") else []


def prepare(experiment, server_image: str, cpus: int) -> None:
    """Swap the agent server's spec for the real server's (same name, network and labels),
    add the upstream for nginx-proxy, and point the clients at the server's port."""
    params: RunParams = experiment.params
    specs = experiment.specs
    agent = specs["server"]
    workers = workers_of(params, cpus)
    upstream = None
    if params.server == "nginx-proxy":
        upstream = agent["name"].replace("-server", "-upstream")
        specs[UPSTREAM] = dict(agent, name=upstream, hostname=UPSTREAM,
                               labels={**agent["labels"], ROLE_LABEL: UPSTREAM})
    spec = dict(hardening(), detach=True, image=server_image, name=agent["name"],
                hostname="server", network=agent["network"],
                command=server_command(params, upstream),
                tmpfs={path: _TMPFS_OPTS for path in TMPFS[params.server]},
                ulimits=[Ulimit(name="nofile", soft=experiment.resolved.server_nofile,
                                hard=experiment.resolved.server_nofile)],
                # Redis keeps ~20 KB of buffers per client: room beyond the agent's budget
                pids_limit=workers + 16, cpu_shares=agent["cpu_shares"],
                mem_limit=agent["mem_limit"] + memory_limit(0, workers) + SERVER_EXTRA_MEMORY,
                labels={**agent["labels"], "tcplimits.server": params.server})
    spec["memswap_limit"] = spec["mem_limit"]  # no swap beyond the limit, as every container
    if params.server_port_range:
        lo, hi = params.server_port_range.split("-")
        spec["sysctls"] = {"net.ipv4.ip_local_port_range": f"{lo} {hi}"}
    specs["server"] = spec
    port = str(server_model.PORTS[params.server])
    for role, s in specs.items():
        if role.startswith("client"):
            cmd = list(s["command"])
            cmd[cmd.index("--port") + 1] = port
            s["command"] = cmd
    experiment.server_workers_expected = workers


def start_upstream(experiment) -> None:
    """nginx-proxy: start the agent server nginx proxies to and wait until it listens. Its
    events go to a queue of their own (the run's state is the clients' and the server's)."""
    if UPSTREAM not in experiment.specs:
        return
    container = experiment.client.containers.create(**experiment.specs[UPSTREAM])
    experiment.containers[UPSTREAM] = container
    container.start()
    events: queue.Queue = queue.Queue()
    reader = LogReader(container, UPSTREAM, events)
    reader.start()
    experiment.readers[UPSTREAM] = reader
    end = time.monotonic() + UPSTREAM_READY_S
    while time.monotonic() < end:
        try:
            _, event = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if event.get("event") == "listening":
            # nginx resolves the upstream once, at start: give it the address (a run id may
            # hold "_", which no resolver takes in a host name)
            container.reload()
            address = container.attrs["NetworkSettings"]["Networks"][
                experiment.network_name]["IPAddress"]
            cmd = experiment.specs["server"]["command"]
            cmd[cmd.index("--upstream") + 1] = f"{address}:{SERVER_PORT}"
            return
        if event.get("event") == "_closed":
            break
    from tcplimits.engine.faults import RunFailed
    raise RunFailed("the upstream agent server of nginx-proxy did not listen")


def _events(lines: list[str], kind: str) -> list[dict]:
    out = []
    for line in lines:
        if line.startswith("{") and f'"event":"{kind}"' in line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def upstream_accepted(experiment) -> int | None:
    """What the upstream agent server accepted (its last count per worker)."""
    reader = experiment.readers.get(UPSTREAM)
    if reader is None:
        return None
    last: dict[int, int] = {}
    for e in _events(reader.lines, "progress") + _events(reader.lines, "result"):
        last[e["worker"]] = e["accepted"]
    return sum(last.values())


def server_block(experiment, state: RunState, clients: list[dict],
                 demand: int) -> dict[str, Any]:
    """run.json's "server" block: what ran (package, version, configuration in force), what
    it held, its log at the limit, the prediction and the verdict."""
    params: RunParams = experiment.params
    reader = experiment.readers.get("server")
    facts = (_events(reader.lines, "server_facts") or [{}])[-1] if reader else {}
    workers = (state.server_listening or {}).get("workers") or getattr(
        experiment, "server_workers_expected", 1)
    effective = facts.get("effective") or {}
    pred = server_model.predict_from_facts(
        params.server, demand, workers=workers, effective=effective,
        server_nofile=experiment.resolved.server_nofile,
        upstream_pool=port_count(params.server_port_range or server_model.DEFAULT_PORT_RANGE),
        settle_s=params.settle)
    held = sum(int(r.get("connections") or 0) for r in clients)
    opened = sum(int(r.get("opened") or 0) for r in clients)
    closed = sum(int(r.get("closed_by_peer") or 0) for r in clients)
    message = next((r.get("peer_message") for r in clients if r.get("peer_message")), None)
    verdict = server_model.judge(pred, held, opened, closed, message, facts.get("log"))
    line = server_model.limit_line(facts.get("log"), pred.bound)
    return {
        "kind": params.server, "package": facts.get("package"),
        "package_version": facts.get("package_version"), "version": facts.get("version"),
        "image": experiment.specs["server"]["image"], "command": facts.get("command"),
        "config": facts.get("config"), "effective": effective, "workers": workers,
        "established": facts.get("established"), "queued": facts.get("queued"),
        "listeners": facts.get("listeners"), "upstream": facts.get("upstream"),
        "upstream_accepted": upstream_accepted(experiment), "log": facts.get("log"),
        "limit_log": line.get("line") if line else None,
        "limit_log_count": line.get("count") if line else None,
        "peer_message": message, "prediction": pred.to_dict(), "verdict": verdict.to_dict(),
    }


def prediction_update(block: dict[str, Any]) -> dict[str, Any]:
    """run.json's "prediction" for a real server: the server model's most held and bound
    (per_client and the client terms stay the hold model's: what the clients could open)."""
    pred = block.get("prediction") or {}
    return {"total": pred.get("high"), "limit": pred.get("bound"),
            "server_capacity": pred.get("high"), "server_accepted": pred.get("high")}


def row(run_id: str, block: dict[str, Any]) -> dict[str, Any]:
    """realserver.parquet's one row (results.REALSERVER_SCHEMA) from run.json's block."""
    pred, verdict = block.get("prediction") or {}, block.get("verdict") or {}
    return dict(
        run_id=run_id, server=block.get("kind"), package_version=block.get("package_version"),
        version=block.get("version"), workers=block.get("workers"),
        effective=json.dumps(block.get("effective") or {}, sort_keys=True),
        held=verdict.get("held"), opened=verdict.get("opened"),
        closed_by_peer=verdict.get("closed_by_peer"), peer_message=block.get("peer_message"),
        established=block.get("established"), queued=block.get("queued"),
        upstream=block.get("upstream"), upstream_accepted=block.get("upstream_accepted"),
        limit_log=block.get("limit_log"), limit_log_count=block.get("limit_log_count"),
        predicted_low=pred.get("low"), predicted_high=pred.get("high"), bound=pred.get("bound"),
        raise_with=pred.get("raise_with"), agrees=verdict.get("agrees"))



def summary_lines(block: dict[str, Any], totals: dict[str, Any]) -> list[str]:
    """`tcplimits run`'s closing lines for a real server, from run.json's "server" block."""
    pred, verdict = block.get("prediction") or {}, block.get("verdict") or {}
    span = (f"{pred.get('low', 0):,}" if pred.get("low") == pred.get("high")
            else f"{pred.get('low', 0):,}-{pred.get('high', 0):,}")
    lines = [f"{block.get('kind')} ({block.get('version')}; Debian {block.get('package')} "
             f"{block.get('package_version')}): clients hold {verdict.get('held', 0):,} of "
             f"{verdict.get('opened', 0):,} opened (model: {span}, bound by "
             f"{pred.get('bound')}{'' if verdict.get('agrees') else '; DISAGREES'})"]
    if block.get("limit_log"):
        lines.append(f"server log at the limit: {block['limit_log']}")
    lines += [f"note: {why}" for why in verdict.get("explanations") or []]
    if pred.get("bound") != server_model.CLIENTS:
        lines.append(f"raise it: {pred.get('raise_with')}")
    return lines


def fix_compose(text: str, params: RunParams) -> str:
    """compose.yml for a real server: its tmpfs and health check on its own port; for the
    proxy, the upstream starts first and is reached by its service name."""
    import yaml

    if not params.real_server:
        return text
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    doc = yaml.safe_load(text)
    services = doc["services"]
    server = services["server"]
    server["tmpfs"] = [f"{path}:{_TMPFS_OPTS}" for path in TMPFS[params.server]]
    check = server["healthcheck"]["test"]
    check[check.index("--port") + 1] = str(server_model.PORTS[params.server])
    if UPSTREAM in services:
        cmd = server["command"]
        cmd[cmd.index("--upstream") + 1] = f"{UPSTREAM}:{SERVER_PORT}"
        up = services[UPSTREAM]
        up.pop("depends_on", None)
        up["healthcheck"] = {"test": ["CMD", "python3", f"{AGENTS}/server.py", "--check",
                                      "--port", str(SERVER_PORT)],
                             "interval": "1s", "retries": 30}
        server["depends_on"] = {UPSTREAM: {"condition": "service_healthy"}}
    return header + yaml.safe_dump(doc, sort_keys=False)
