"""Benchmark one experiment (not a test): how long one client process takes to exhaust a
10,000-port range, its connect rate before exhaustion, and the fixed overhead of a run
(network + containers up and down), reported separately.

    python benchmarks/bench_engine.py [--repeat 3] [--out benchmarks/results/engine.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import docker
import polars as pl

from tcplimits import results
from tcplimits.engine import run_experiment
from tcplimits.config.params import RunParams


def one(params: RunParams, name: str, workdir: Path, client) -> dict:
    record = run_experiment(params, workdir / name, run_id=name, progress=False, client=client,
                            log=lambda m: None)
    assert record["status"] == results.STATUS_OK, record["reason"]
    series = pl.read_parquet(workdir / name / results.SERIES_FILE)
    clients = pl.read_parquet(workdir / name / results.CLIENTS_FILE)
    out = {k: record[k] for k in ("setup_s", "connect_s", "teardown_s", "duration_s")}
    out["connections"] = int(clients["connections"].sum())
    out["exhaust_s"] = float(clients["elapsed_s"].max())
    if out["connections"] >= 100:  # latency halves make sense only for a real fill
        total = out["connections"]
        first = series.filter(pl.col("connections") <= total // 2)
        second = series.filter(pl.col("connections") > total // 2)
        out["first_half_connect_us"] = 1e6 * float(first["connect_latency_s"].mean())
        out["second_half_connect_us"] = 1e6 * float(second["connect_latency_s"].mean())
        out["connections_per_s"] = total / out["exhaust_s"]
        half_t = float(first["t_s"].max())
        out["first_half_connections_per_s"] = int(first["connections"].max()) / half_t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/engine.json")
    args = parser.parse_args()
    client = docker.from_env()
    exhaust = RunParams(port_range="40000-49999", nofile=15000, procs=1, clients=1)
    overhead = RunParams(port_range="40000-40000", nofile=1000, procs=1, clients=1)
    runs = {"exhaust_10000": [], "overhead": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs["exhaust_10000"].append(one(exhaust, f"bench-exhaust-{i}", Path(tmp), client))
            runs["overhead"].append(one(overhead, f"bench-overhead-{i}", Path(tmp), client))
    summary = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in runs.items()
    }
    summary["repeat"] = args.repeat
    results.write_json({"summary": summary, "runs": runs}, args.out)
    e, o = summary["exhaust_10000"], summary["overhead"]
    print(f"one process exhausts 10,000 ports: {e['connections']:,.0f} connections in "
          f"{e['exhaust_s']:.2f} s ({e['connections_per_s']:,.0f}/s; first half "
          f"{e['first_half_connections_per_s']:,.0f}/s at {e['first_half_connect_us']:.0f} µs, "
          f"second half {e['second_half_connect_us']:.0f} µs per connect)")
    print(f"fixed overhead of a run: setup {o['setup_s']:.2f} s, teardown {o['teardown_s']:.2f} s, "
          f"whole run {o['duration_s']:.2f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
