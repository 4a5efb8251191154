"""The run record: the rows of the run's tables, the environment block of run.json, and the
run directory written atomically (run.json last: its presence means the directory is done)."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

from .. import __version__, faults, outdir, results
from ..params import RunParams
from .events import RunState


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
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


# Sockets a client finds held in its namespace before its first connect(), by local address:
# the owner name run.json records (tcplimits.model words it).
OWNER_OF_ADDRESS = {"127.0.0.11": "docker-dns"}  # Docker's embedded DNS resolver

SERVER_OUTCOME = ("worker", "accepted", "errno", "error", "message", "accept_errors")


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
        "server_workers": [{k: r.get(k) for k in SERVER_OUTCOME}
                           for _, r in sorted(state.server_results.items())],
    }


def client_rows(state: RunState, params: RunParams, run_id: str,
                addresses: dict[int, str]) -> list[dict]:
    """One row per client process (results.CLIENTS_SCHEMA)."""
    rows = []
    for client in range(1, params.clients + 1):
        held = len(state.ready.get(client, {}).get("held", []))
        for proc in range(1, params.procs + 1):
            result = state.results.get((client, proc))
            row = dict(run_id=run_id, client=client, proc=proc, client_ip=addresses.get(client),
                       held_ports=held)
            if result:
                row.update({k: result.get(k) for k in
                            ("connections", "errno", "error", "message", "elapsed_s",
                             "cpu_s")})
            else:
                row.update(connections=state.progress.get((client, proc), 0), error="NO_RESULT",
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
    from .. import footprint

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


def write_run(out_dir: Path, record: dict, clients: list[dict], server: list[dict],
              series: list[dict], compose: str | None,
              save_logs: Callable[[Path], None] | None = None) -> None:
    """Write the run directory. When the disk fills up (or the directory goes away) the
    partial files are removed and run.json alone says why, if even that can be written."""
    try:
        _write_files(out_dir, record, clients, server, series, compose, save_logs)
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
                 save_logs: Callable[[Path], None] | None) -> None:
    if save_logs is not None:
        save_logs(out_dir)
    results.write_parquet(results.frame(clients, results.CLIENTS_SCHEMA),
                          out_dir / results.CLIENTS_FILE)
    results.write_parquet(results.frame(server, results.SERVER_SCHEMA),
                          out_dir / results.SERVER_FILE)
    results.write_parquet(results.frame(series, results.SERIES_SCHEMA),
                          out_dir / results.SERIES_FILE)
    if compose:
        results.write_text(compose, out_dir / results.COMPOSE_FILE)
    # run.json last: its presence means the run directory is complete.
    results.write_json(record, out_dir / results.RUN_JSON)
