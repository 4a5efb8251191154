"""Run directories like the engine's, written by hand (shared by the results' tests)."""

from __future__ import annotations

from pathlib import Path

from tcplimits import model, results
from tcplimits.config.params import RunParams

ENV = {"kernel": "6.18.0", "docker_version": "20.10.24", "storage_driver": "overlay2",
       "cgroup_version": "2", "engine_nofile_cap": 20000, "nf_conntrack_max": 262144,
       "image_id": "sha256:abc", "image_tag": "tcplimits-agent:1", "tcplimits_version": "0.1.0",
       "git_sha": None}


def write_ok_run(run_dir: Path, run_id: str, params: RunParams, held: list[list[int]],
                 per_proc: list[int], error: str) -> None:
    """A run directory like the engine's, with clients that each hold ``per_proc``."""
    prediction = model.predict(params, server_nofile=20000, server_workers=1,
                               held_ports=[len(h) for h in held])
    clients = [dict(run_id=run_id, client=c, proc=p, client_ip=f"10.0.0.{c + 1}",
                    connections=per_proc[c - 1], errno=99, error=error, message="x",
                    elapsed_s=0.5, held_ports=len(held[c - 1]))
               for c in range(1, params.clients + 1) for p in range(1, params.procs + 1)]
    server = [dict(run_id=run_id, worker=1, accepted=sum(r["connections"] for r in clients),
                   accept_errors=0)]
    series = [dict(run_id=run_id, client=1, proc=1, connections=n, t_s=n / 1000,
                   connect_latency_s=1e-5) for n in (10, 20)]
    for name, rows in ((results.CLIENTS_FILE, clients), (results.SERVER_FILE, server),
                       (results.SERIES_FILE, series)):
        results.write_parquet(results.frame(rows, results.SCHEMAS[name]), run_dir / name)
    results.write_json({
        "run_id": run_id, "status": "ok", "reason": None, "params": params.to_dict(),
        "resolved": {"server_nofile": 20000, "server_workers": 1, "sample_every": 10},
        "prediction": prediction.to_dict(),
        "started_at": "2026-01-02T03:04:05.000001+00:00", "ended_at": "2026-01-02T03:04:15Z",
        "duration_s": 10.0, "setup_s": 4.0, "connect_s": 1.5, "teardown_s": 2.0,
        "environment": ENV,
        "totals": {"connections": sum(r["connections"] for r in clients),
                   "server_accepted": server[0]["accepted"]},
        "held_ports": {str(c + 1): h for c, h in enumerate(held)},
        "facts": {"held_sockets": {str(c + 1): [{"addr": "127.0.0.11", "port": port,
                                                 "state": "LISTEN", "owner": "docker-dns"}
                                                for port in h] for c, h in enumerate(held)},
                  "somaxconn": 4096, "server_workers": []},
    }, run_dir / results.RUN_JSON)


def write_unsupported_run(run_dir: Path, run_id: str, params: RunParams) -> None:
    """What the engine writes when it refuses the parameters: no prediction, no totals."""
    for name, schema in results.SCHEMAS.items():
        results.write_parquet(results.frame([], schema), run_dir / name)
    results.write_json({
        "run_id": run_id, "status": "unsupported",
        "reason": "engine allows nofile up to 20000; asked 30000", "params": params.to_dict(),
        "resolved": None, "prediction": None, "started_at": "2026-01-02T03:04:05+00:00",
        "ended_at": None, "duration_s": 0.1, "setup_s": None, "teardown_s": None,
        "environment": {**ENV, "future_key": {"a": 1}}, "totals": None, "held_ports": None,
        "facts": {},
    }, run_dir / results.RUN_JSON)
