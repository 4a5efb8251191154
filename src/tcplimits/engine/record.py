"""The run record: run.json from its empty skeleton to the finished run (``new_record``,
``assemble``), the rows of the run's tables, and the run directory written atomically (run.json
last: its presence means the directory is done)."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tcplimits import __version__, model, results
from tcplimits.config.params import RunParams
from tcplimits.engine import faults, host, outdir
from tcplimits.engine.events import RunState
from tcplimits.model import churn as churn_model, fourtuple


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_record(run_id: str, params: RunParams) -> dict[str, Any]:
    """run.json as a run starts: every key in its place (the file's order), nothing known."""
    return {
        "run_id": run_id, "status": None, "reason": None, "fault": None,
        "params": params.to_dict(), "resolved": None, "prediction": None,
        "started_at": now(), "ended_at": None, "duration_s": None, "setup_s": None,
        "quiet_wait_s": None, "connect_s": None, "teardown_s": None, "noisy": None,
        "noisy_reason": None, "environment": None, "totals": None, "held_ports": None,
        "facts": {},  # what the engine measured; tcplimits.model explains from it
        "host_tcp": None,
    }


def close_record(record: dict[str, Any], started: float, **outcome: Any) -> dict[str, Any]:
    """A run that stopped before its containers (engine gone, refused): its outcome, the end
    time and the duration since ``started`` (time.monotonic)."""
    record.update(**outcome, ended_at=now(), duration_s=round(time.monotonic() - started, 3))
    return record


@dataclass
class RunTables:
    """The rows of a run's tables, as results' schemas name them."""

    clients: list[dict] = field(default_factory=list)
    server: list[dict] = field(default_factory=list)
    series: list[dict] = field(default_factory=list)
    destinations: list[dict] = field(default_factory=list)
    churn: Iterable[dict] = ()  # churn_rows: a generator over the spooled seconds, read once


def assemble(record: dict[str, Any], experiment, *, engine: dict, host_facts: dict | None,
             status: str, reason: str | None, fault: str | None, addresses: dict[int, str],
             started: float) -> RunTables:
    """Complete ``record`` from what ``experiment`` (engine.experiment.Experiment, torn down)
    measured: the timeline, the facts, the model's prediction with the ports found held, the
    totals, the footprint, the outcome; and return the run's tables. ``engine``: the engine's
    facts (probe); ``started``: time.monotonic() when the run began."""
    params, resolved, run_id = experiment.params, experiment.resolved, experiment.run_id
    state = experiment.state
    record.update({k: round(v, 3) for k, v in experiment.timeline.items()})
    facts = run_facts(state)
    held = facts["held_sockets"]
    held_by_client = [held.get(str(c), []) for c in range(1, params.clients + 1)]
    prediction = model.predict(
        params, server_nofile=resolved.server_nofile, server_workers=resolved.server_workers,
        held_ports=held_by_client, conntrack_max=engine.get("nf_conntrack_max"),
        somaxconn=facts["somaxconn"] or model.SOMAXCONN, host_facts=host_facts)
    own = {int(role[len("client"):]): addrs for role, addrs in experiment.addresses.items()
           if role.startswith("client")}
    tables = RunTables(clients=client_rows(state, params, run_id, addresses, own),
                       server=server_rows(state, run_id), series=series_rows(state, run_id),
                       destinations=destination_rows(state, run_id),
                       churn=churn_rows(state, run_id, experiment.connect_started_at, params))
    connections = sum(r["connections"] or 0 for r in tables.clients)
    record["facts"].update(facts)
    record.update(
        status=status, reason=reason, prediction=prediction.to_dict(),
        held_ports={c: [s["port"] for s in sockets] for c, sockets in held.items()},
        totals={"connections": connections,
                "server_accepted": (sum(r["accepted"] or 0 for r in tables.server)
                                    if tables.server else None)},
        footprint=footprint_record(experiment.snapshots, state, connections),
        fault=fault, ended_at=now(), duration_s=round(time.monotonic() - started, 3),
        **tuple_record(experiment, state),
    )
    if params.churn:  # judged by the churn model, not by the hold model's prediction
        record["churn"] = churn_model.run_record(
            run_id, params, tables.clients, held_by_client,
            finished=status == results.STATUS_OK, seconds=state.churn)
    if params.gateway:  # behind the NAT: its model's count and limit (engine.nat)
        from tcplimits.engine import nat

        nat.assemble(record, experiment.nat, held, addresses, tables.clients, prediction)
    if experiment.quiet is not None:  # it got as far as connecting
        reasons = [experiment.quiet.reason] if experiment.quiet.noisy else []
        reasons += [r for r in [model.dropped_syns_reason(facts["listen_drops"],
                                                          prediction.limit)] if r]
        record.update(noisy=bool(reasons), noisy_reason="; ".join(reasons) or None)
        record["host_tcp"]["at_connect"] = experiment.quiet.before
    record["host_tcp"]["after"] = host.read_state(experiment.local_host)
    return tables


def git_sha() -> str | None:
    here = Path(__file__).resolve().parents[1]  # the package: a change anywhere in it is "dirty"
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def environment(facts: dict, image) -> dict[str, Any]:
    """run.json's environment block: the engine's facts, the image, this code, this host."""
    return {
        "kernel": facts.get("kernel"),
        "docker_version": facts.get("docker_version"),
        "storage_driver": facts.get("storage_driver"),
        "cgroup_version": facts.get("cgroup_version"),
        "engine_nofile_cap": facts.get("engine_nofile_cap"),
        "nf_conntrack_max": facts.get("nf_conntrack_max"),
        "image_id": getattr(image, "id", None),
        "image_tag": (image.tags[0] if getattr(image, "tags", None) else None),
        "tcplimits_version": __version__,
        "git_sha": git_sha(),
        "hostname": socket.gethostname(),
    }


def held_other_addr(held: list[dict], own: list[str]) -> int:
    """Held ports bound to a specific address the client never leaves from (Docker's DNS on
    127.0.0.11): bind((source, 0)) may still take them (see fourtuple.held_cost)."""
    return len({s["port"] for s in held
                if s.get("addr") not in fourtuple.WILDCARDS and s.get("addr") not in own})


# Sockets a client finds held in its namespace before its first connect(), by local address:
# the owner name run.json records (tcplimits.model words it).
OWNER_OF_ADDRESS = {"127.0.0.11": "docker-dns"}  # Docker's embedded DNS resolver

SERVER_OUTCOME = ("worker", "accepted", "errno", "error", "message", "accept_errors")


def listen_drops(state: RunState) -> int | None:
    """SYNs the server's namespace dropped at its listeners during the run (each worker reads
    the namespace's counter; the last to report saw the most), or None if unknown."""
    counts = [r.get("listen_drops") for r in state.server_results.values()
              if r.get("listen_drops") is not None]
    return max(counts) if counts else None


def run_facts(state: RunState) -> dict[str, Any]:
    """run.json's "facts": what the engine measured, from which tcplimits.model explains."""
    held = {
        str(client): [{**{k: s.get(k) for k in ("addr", "port", "state")},
                       "owner": OWNER_OF_ADDRESS.get(s.get("addr"))}
                      for s in state.ready[client].get("held", [])]
        for client in sorted(state.ready)
    }
    listening = state.server_listening or {}
    return {
        "held_sockets": held,
        "somaxconn": listening.get("somaxconn"),
        "listen_drops": listen_drops(state),
        "server_workers": [{k: r.get(k) for k in SERVER_OUTCOME}
                           for _, r in sorted(state.server_results.items())],
    }


def client_rows(state: RunState, params: RunParams, run_id: str,
                addresses: dict[int, str], own: dict[int, list[str]] | None = None) -> list[dict]:
    """One row per client process (results.CLIENTS_SCHEMA). ``own``: every address of each
    client (default: its Docker address)."""
    rows = []
    for client in range(1, params.clients + 1):
        sockets = state.ready.get(client, {}).get("held", [])
        held = len(sockets)
        other = held_other_addr(sockets, (own or {}).get(client, [addresses.get(client)]))
        for proc in range(1, params.procs + 1):
            result = state.results.get((client, proc))
            row = dict(run_id=run_id, client=client, proc=proc, client_ip=addresses.get(client),
                       held_ports=held, held_other_addr=other)
            if result:
                row.update({k: result.get(k) for k in
                            ("connections", "errno", "error", "message", "elapsed_s",
                             "cpu_s", "opened", "closed_by_peer", "peer_message")})
            else:
                row.update(connections=state.progress.get((client, proc), 0),
                           opened=state.progress.get((client, proc), 0), error="NO_RESULT",
                           message="the process had not stopped when the run ended")
            rows.append(row)
    return rows


def server_rows(state: RunState, run_id: str) -> list[dict]:
    """One row per server worker (results.SERVER_SCHEMA)."""
    return [dict(run_id=run_id, **{k: r.get(k) for k in SERVER_OUTCOME})
            for _, r in sorted(state.server_results.items())]


def series_rows(state: RunState, run_id: str) -> list[dict]:
    """The progress samples (results.SERIES_SCHEMA)."""
    return [dict(run_id=run_id, **{k: s[k] for k in
                                   ("client", "proc", "connections", "t_s", "connect_latency_s")})
            for s in state.samples]


def footprint_record(snapshots: dict[str, dict], state: RunState,
                     connections: int) -> dict[str, Any] | None:
    """run.json's "footprint": what the held connections cost (footprint.per_connection),
    the conntrack entries they took (the server's namespace as its agent read it, the host's
    for this run's server), and the host before the first connect() and with them held."""
    from tcplimits.engine import footprint

    before, held = snapshots.get("before"), snapshots.get("held")
    counts = [r.get("conntrack") for r in state.server_results.values()
              if r.get("conntrack") is not None]
    out: dict[str, Any] = {
        "server_namespace_conntrack": max(counts) if counts else None,
        "host_conntrack_run": held.get("host_conntrack_run") if held else None,
        "host_before": before["host"] if before else None,
        "host_held": held["host"] if held else None,
        "containers_held": held["containers"] if held else None,
    }
    if before and held:
        out.update(footprint.per_connection(before, held, connections))
    return out


def churn_rows(state: RunState, run_id: str, started_at: float | None,
               params: RunParams | None = None) -> Iterator[dict]:
    """Mode churn's per-second series (results.CHURN_SCHEMA), on the run's time axis: seconds
    since the engine started the clients (``started_at``, wall clock).

    On network loopback every agent shares the server's namespace, so each one's TIME_WAIT
    count is the namespace's: only the end that closes first ever enters TIME_WAIT, so the
    server's samples are kept, as that end's (client: all clients together, client null),
    and the clients' copies of them dropped. A generator: the seconds are read from the
    state's spool as they are written (there may be millions)."""
    origin = started_at or 0.0
    begun = {key: r.get("started_at") for key, r in state.results.items()}
    for e in state.churn:
        offset = (begun.get((e["client"], e["proc"])) or origin) - origin
        yield dict(run_id=run_id, role="client", client=e["client"], proc=e["proc"],
                   t_s=round(offset + e["second"], 3), opened=e["opened"],
                   errors=e["errors"], error=e.get("error"),
                   connect_latency_s=e.get("connect_latency_s"))
    shared = params is not None and params.network == "loopback"
    for e in state.time_wait:
        role, client = e["role"], e.get("client")
        if shared:
            if role != "server":
                continue
            role, client = params.closer, None
        yield dict(run_id=run_id, role=role, client=client, t_s=round(e["at"] - origin, 3),
                   time_wait=e["time_wait"])


def destination_rows(state: RunState, run_id: str) -> list[dict]:
    """One row per (client, process, source, server address, server port)
    (results.DESTINATIONS_SCHEMA)."""
    return [dict(run_id=run_id, client=client, proc=proc, source=src, server_addr=addr,
                 server_port=port, connections=n, error=error)
            for (client, proc), pairs in sorted(state.pairs.items())
            for src, addr, port, n, error in pairs]


def tuple_record(experiment, state: RunState) -> dict[str, Any]:
    """run.json's "addresses" (every address each container had, the network's subnet and
    Docker's allocation range) and "privileges" (what the agents held; which helper used
    which capability, on which container)."""
    agents = {role: {"cap_drop": spec.get("cap_drop"), "cap_add": spec.get("cap_add"),
                     "user": spec.get("user")} for role, spec in experiment.specs.items()}
    for client, ready in state.ready.items():
        agents[f"client{client}"]["capabilities"] = ready.get("capabilities")
    if state.server_listening:
        agents["server"]["capabilities"] = state.server_listening.get("capabilities")
    plan = experiment.address_plan
    return {
        "addresses": {"network": experiment.network_ipam,
                      "plan": plan.to_dict() if plan else None,
                      "containers": experiment.addresses},
        "privileges": {"agents": agents, "helpers": experiment.helpers},
    }


def write_run(out_dir: Path, record: dict, clients: list[dict], server: list[dict],
              series: list[dict], compose: str | None,
              destinations: list[dict] | None = None,
              save_logs: Callable[[Path], None] | None = None, churn: Iterable[dict] = (),
              realserver: list[dict] = ()) -> None:
    """Write the run directory. When the disk fills up (or the directory goes away) the
    partial files are removed and run.json alone says why, if even that can be written."""
    try:
        _write_files(out_dir, record, clients, server, series, compose, destinations,
                     save_logs, churn, realserver)
    except OSError as err:
        outdir.clear(out_dir)
        reason = f"could not write the run directory {out_dir}: {err.strerror or err}"
        if record["status"]:
            reason += f" (the run itself: {record['status']}" + (
                f", {record['reason']})" if record["reason"] else ")")
        record.update(status=results.STATUS_FAILED, fault=faults.OUT_UNWRITABLE, reason=reason)
        try:
            results.write_json(record, out_dir / results.RUN_JSON)
        except OSError:
            pass


def _write_files(out_dir: Path, record: dict, clients: list[dict], server: list[dict],
                 series: list[dict], compose: str | None,
                 destinations: list[dict] | None,
                 save_logs: Callable[[Path], None] | None, churn: Iterable[dict] = (),
                 realserver: list[dict] = ()) -> None:
    if save_logs is not None:
        save_logs(out_dir)
    results.write_parquet(results.frame(clients, results.CLIENTS_SCHEMA),
                          out_dir / results.CLIENTS_FILE)
    results.write_parquet(results.frame(server, results.SERVER_SCHEMA),
                          out_dir / results.SERVER_FILE)
    results.write_parquet(results.frame(series, results.SERIES_SCHEMA),
                          out_dir / results.SERIES_FILE)
    results.write_parquet_rows(churn, results.CHURN_SCHEMA, out_dir / results.CHURN_FILE)
    results.write_parquet(results.frame(destinations or [], results.DESTINATIONS_SCHEMA),
                          out_dir / results.DESTINATIONS_FILE)
    # empty unless the server is a real one (issue 21): the workflow expects every table
    results.write_parquet(results.frame(realserver, results.REALSERVER_SCHEMA),
                          out_dir / results.REALSERVER_FILE)
    if compose:
        results.write_text(compose, out_dir / results.COMPOSE_FILE)
    # run.json last: its presence means the run directory is complete.
    results.write_json(record, out_dir / results.RUN_JSON)
