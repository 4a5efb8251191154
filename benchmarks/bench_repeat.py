"""Benchmark repeatability (not a test): one 10,000-port exhaustion run five times in a row,
as a sweep runs its points, and how much its timings vary between repetitions.

Each repetition is a full `run_experiment` (quiet-host wait, setup, connect, teardown). The
time compared is the client's exhaustion time (elapsed_s: first connect() to the failing one)
and connect_s (start signal to the last result). Spread = (max - min) / median. The host's
leftover sockets when each repetition started connecting are recorded next to its times,
with the noisy flag.

    python benchmarks/bench_repeat.py [--repeat 5] [--out benchmarks/results/repeat.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import docker
import polars as pl

from tcplimits import host, results
from tcplimits.engine import run_experiment
from tcplimits.params import RunParams


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def one(params: RunParams, name: str, workdir: Path, client) -> dict:
    record = run_experiment(params, workdir / name, run_id=name, progress=False, client=client,
                            log=lambda m: None)
    assert record["status"] == "ok", record["reason"]
    clients = pl.read_parquet(workdir / name / results.CLIENTS_FILE)
    at_connect = record["host_tcp"].get("at_connect") or {}
    after = record["host_tcp"]["after"]
    return {
        "connections": int(clients["connections"].sum()),
        "exhaust_s": float(clients["elapsed_s"].max()),
        "connect_s": record["connect_s"], "teardown_s": record["teardown_s"],
        "quiet_wait_s": record["quiet_wait_s"], "noisy": record["noisy"],
        "noisy_reason": record["noisy_reason"],
        "leftover_at_connect": host.leftover_sockets(at_connect) if at_connect else None,
        "orphan_at_connect": at_connect.get("orphan"), "orphan_after": after.get("orphan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quiet-timeout", type=float, default=120.0)
    parser.add_argument("--quiet-sockets", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/repeat.json")
    args = parser.parse_args()
    client = docker.from_env()
    params = RunParams(port_range="40000-49999", nofile=15000, procs=1, clients=1,
                       quiet_timeout=args.quiet_timeout, quiet_sockets=args.quiet_sockets)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.repeat + 1):
            rows.append(one(params, f"bench-repeat-{i}", Path(tmp), client))
            print(f"repetition {i}: {rows[-1]}", flush=True)
    summary = {key: {"values": [r[key] for r in rows], "median": statistics.median(r[key] for r in rows),
                     "spread": spread([r[key] for r in rows])}
               for key in ("exhaust_s", "connect_s", "teardown_s")}
    results.write_json({"params": params.to_dict(), "runs": rows, "summary": summary},
                       Path(args.out))
    for key, s in summary.items():
        print(f"{key:11} " + " ".join(f"{v:6.2f}" for v in s["values"])
              + f"   median {s['median']:.2f} s, spread {100 * s['spread']:.1f}%")
    print("noisy repetitions:", sum(bool(r["noisy"]) for r in rows), "of", len(rows))


if __name__ == "__main__":
    main()
