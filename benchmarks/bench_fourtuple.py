"""Benchmark the 4-tuple (not a test): (1) the time to fill K x pool against K for each member
(server ports, server addresses, client addresses with bind-no-port): does the kernel's cost
per connect grow with K? (2) connect latency against fill for each bind mode, one
destination.

    python benchmarks/bench_fourtuple.py [--pool 1000] [--out benchmarks/results/fourtuple.json]

Runs share the machine with whatever else runs: compare figures of one output only, as
ratios. Points run interleaved (K = 1, 2, 4 of each member in turn) so drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import docker
import polars as pl

from tcplimits import results
from tcplimits.engine import run_experiment
from tcplimits.config.params import RunParams

MEMBERS = {  # member -> (parameter, extra settings)
    "server_ports": ("server_ports", {}),
    "server_addrs": ("server_addrs", {}),
    "client_addrs": ("client_addrs", {"bind_mode": "bind-no-port"}),
}
FILL_BINS = 10


def host_load() -> dict:
    """What else the machine is doing: timings mean little when it is busy."""
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    with open("/proc/net/sockstat") as f:
        tcp = next(line for line in f if line.startswith("TCP:")).split()
    return {"loadavg_1m": load, "tcp_orphans": int(tcp[tcp.index("orphan") + 1])}


def one(params: RunParams, name: str, workdir: Path, client) -> tuple[dict, pl.DataFrame]:
    before = host_load()
    record = run_experiment(params, workdir / name, run_id=name, progress=False, client=client,
                            log=lambda m: None)
    assert record["status"] == "ok", record["reason"]
    clients = pl.read_parquet(workdir / name / results.CLIENTS_FILE)
    series = pl.read_parquet(workdir / name / results.SERIES_FILE)
    connections = int(clients["connections"].sum())
    fill_s = float(clients["elapsed_s"].max())
    return {"connections": connections, "predicted": record["prediction"]["total"],
            "fill_s": round(fill_s, 4), "us_per_connection": round(1e6 * fill_s / connections, 1),
            "errors": sorted(set(clients["error"])), "host_before": before}, series


def latency_by_fill(series: pl.DataFrame, total: int) -> list[float]:
    """Mean connect() latency (us) in each tenth of the fill."""
    binned = (series.with_columns(bin=(pl.col("connections") * FILL_BINS // (total + 1)))
              .group_by("bin").agg(pl.col("connect_latency_s").mean()).sort("bin"))
    return [round(1e6 * v, 1) for v in binned["connect_latency_s"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=1000, help="ports in the range")
    parser.add_argument("--ks", default="1,2,4", help="K values; empty: latency part only")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each figure is the median over them")
    parser.add_argument("--out", default="benchmarks/results/fourtuple.json")
    args = parser.parse_args()
    client = docker.from_env()
    port_range = f"40000-{40000 + args.pool - 1}"
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    base = dict(port_range=port_range, nofile=15000)
    out: dict = {"pool": args.pool, "fill_vs_k": {m: {} for m in MEMBERS}, "latency_vs_fill": {}}
    rounds: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for k in ks:
                for member, (key, extra) in MEMBERS.items():
                    if k == 1 and member != "server_ports" and not extra:
                        continue  # the same point as server_ports K = 1
                    params = RunParams.from_mapping({**base, **extra, key: k})
                    row, _ = one(params, f"b4-{member}-{k}-{r}", Path(tmp), client)
                    rounds.setdefault((member, str(k)), []).append(row)
                    print(member, k, row, flush=True)
            for mode in ("connect", "bind", "bind-no-port"):
                params = RunParams.from_mapping({**base, "bind_mode": mode})
                row, series = one(params, f"b4-latency-{mode}-{r}", Path(tmp), client)
                row["latency_us_by_tenth_of_fill"] = latency_by_fill(series, row["connections"])
                rounds.setdefault(("latency", mode), []).append(row)
                print(mode, row, flush=True)
    for (member, k), rows in rounds.items():
        summary = dict(rows[0], rounds=rows)
        summary["us_per_connection"] = statistics.median(r["us_per_connection"] for r in rows)
        if member == "latency":
            summary["latency_us_by_tenth_of_fill"] = [
                statistics.median(t) for t in zip(*(r["latency_us_by_tenth_of_fill"]
                                                    for r in rows))]
            out["latency_vs_fill"][k] = summary
        else:
            out["fill_vs_k"][member][k] = summary
    for member in MEMBERS if ks else ():
        by_k = out["fill_vs_k"][member]
        by_k.setdefault("1", out["fill_vs_k"]["server_ports"].get("1"))
        out["fill_vs_k"][member] = {k: by_k[k] for k in sorted(by_k, key=int)}
    for member, by_k in out["fill_vs_k"].items():
        if not ks:
            break
        first = by_k[str(ks[0])]["us_per_connection"]
        for k, row in by_k.items():
            row["cost_ratio_to_k1"] = round(row["us_per_connection"] / first, 2)
    results.write_json(out, Path(args.out))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
