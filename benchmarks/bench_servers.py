"""Benchmark real servers against the agent server (not a test, issue 21): connections per
second each server accepts up to its bound, side by side in one run, the servers' order
rotating every round so that none always runs first on a warm (or busy) host.

Each server gets bounds above the clients' demand (one client of 5,000 ports), so every
connection is held: nginx with 8,192 worker_connections per worker, the proxy with 16,384
(two slots per proxied connection), Redis with its default maxclients (10,000). The rate is
held connections over the client's connecting time (its elapsed_s, first to last connect()).
On a shared, busy machine the figures are indicative only: compare within a round.

    python benchmarks/bench_servers.py [--rounds 3] [--out benchmarks/results/servers.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import uuid
from pathlib import Path

import docker
import polars as pl

from tcplimits import results
from tcplimits.config.params import RunParams
from tcplimits.engine import run_experiment

PORT_RANGE = "40000-44999"
SERVERS = {
    "agent": {},
    "nginx": {"server": "nginx", "worker_connections": 8192},
    "nginx-proxy": {"server": "nginx-proxy", "worker_connections": 16384},
    "redis": {"server": "redis"},
}


def one(name: str, workdir: Path, client) -> dict:
    params = RunParams.from_mapping({"port_range": PORT_RANGE, "quiet_host_timeout": 30,
                                     **SERVERS[name]})
    run_id = f"bench-servers-{name}-{uuid.uuid4().hex[:6]}"
    record = run_experiment(params, workdir / run_id, run_id=run_id, progress=False,
                            client=client, log=lambda m: None)
    clients = results.read_table(workdir / run_id, results.CLIENTS_FILE)
    held = int(clients["connections"].sum()) if clients.height else 0
    elapsed = float(clients["elapsed_s"].max()) if clients.height else None
    return {"server": name, "status": record["status"], "reason": record["reason"],
            "held": held, "opened": int(clients["opened"].sum()) if clients.height else 0,
            "connect_s": elapsed, "per_s": round(held / elapsed) if held and elapsed else None,
            "noisy": record.get("noisy"), "version": (record.get("server") or {}).get("version")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/servers.json"))
    args = ap.parse_args(argv)
    client = docker.from_env()
    names = list(SERVERS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcplimits-bench-servers-") as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                row = {"round": r + 1, **one(name, Path(tmp), client)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for name in names:
        rates = [r["per_s"] for r in rows if r["server"] == name and r["per_s"]]
        summary[name] = {"median_per_s": statistics.median(rates) if rates else None,
                         "runs": len(rates)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"port_range": PORT_RANGE, "rows": rows,
                                    "summary": summary}, indent=2) + "\n")
    print(pl.DataFrame(rows).select("round", "server", "held", "connect_s", "per_s", "noisy"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
