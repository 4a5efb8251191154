"""Benchmark one host, one million (not a test): run the rungs of config/million.yaml and write,
per rung, the connections held, the time to connect them, setup and teardown times, kernel and
user bytes per connection, the peak conntrack counts, and the orphans and TIME-WAIT sockets
the teardown left on the host, with the exact host settings in force.

    python benchmarks/bench_million.py                 # the 1,000,000 rung only
    python benchmarks/bench_million.py --rungs all     # every rung of the ladder
    python benchmarks/bench_million.py --rungs none --ceiling   # the host's ceiling (issue 22)
    python benchmarks/bench_million.py --rungs 100000,1000000 --out benchmarks/results/million.json

Heavy: 1M connections take ~11 GB of memory and two descriptors each on this host. Run it on
a host nobody else is using (it refuses to start while other tcplimits containers run, unless
--shared), and read /proc/net/sockstat afterwards: it must show no orphans left by the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import polars as pl

from tcplimits.engine import footprint
from tcplimits import results
from tcplimits.engine import run_experiment
from tcplimits.config.grid import load_config, points

SETTLE_AFTER_S = 10  # orphans and TIME-WAIT are read when the run returns and this later


def predicted_connections(point) -> int:
    p = point.params
    per_proc = min(p.nofile - 3, p.max_connections or p.nofile)
    return p.clients * p.procs * per_proc


class MemoryWatch(threading.Thread):
    """The host's lowest MemAvailable (and its used memory then) while a rung runs: the peak
    memory the issue asks for, read from /proc/meminfo every half second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.lowest: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.wait(0.5):
            info = _meminfo()
            if not self.lowest or info["MemAvailable"] < self.lowest["MemAvailable"]:
                self.lowest = info


RECLAIM = ("pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct",
           "allocstall_normal", "allocstall_movable", "compact_stall")


def _vmstat() -> dict[str, int]:
    """/proc/vmstat's page-reclaim counters: whether allocating the sockets went through
    reclaim (kswapd or direct, stalling the allocating process)."""
    with open("/proc/vmstat") as f:
        values = dict(line.split() for line in f)
    return {k: int(values[k]) for k in RECLAIM if k in values}


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("MemTotal", "MemAvailable", "Slab")}


def one(point, workdir: Path, client) -> dict:
    before = footprint.host_facts()
    t0 = time.monotonic()
    watch = MemoryWatch()
    reclaim_before = _vmstat()
    watch.start()
    try:
        record = run_experiment(point.params, workdir / point.id, run_id=point.id,
                                progress=True, client=client,
                                log=lambda m: print(m, file=sys.stderr))
    finally:
        watch.stop.set()
        watch.join()
    reclaim = {k: v - reclaim_before.get(k, 0) for k, v in _vmstat().items()}
    wall = time.monotonic() - t0
    after = footprint.host_facts()
    time.sleep(SETTLE_AFTER_S)
    later = footprint.host_facts()
    fp = record.get("footprint") or {}
    run_dir = workdir / point.id
    clients = (pl.read_parquet(run_dir / results.CLIENTS_FILE)
               if (run_dir / results.CLIENTS_FILE).exists() else None)
    tcp = lambda facts, key: (facts.get("sockstat_tcp") or {}).get(key)  # noqa: E731
    held = record["totals"]["connections"] if record.get("totals") else 0
    connect_s = record.get("connect_s")
    out = {
        "point": point.id,
        "network": point.params.network,
        "status": record["status"],
        "reason": record.get("reason"),
        # connections: ceiling (issue 22) resolves where the run starts: the run says to what
        "asked": (record.get("ceiling") or {}).get("connections") or predicted_connections(point),
        "ceiling": record.get("ceiling"),
        "predicted": (record.get("prediction") or {}).get("total"),
        "predicted_limit": (record.get("prediction") or {}).get("limit"),
        "connections_held": held,
        "server_accepted": (record.get("totals") or {}).get("server_accepted"),
        "errors": (clients["error"].value_counts().to_dicts() if clients is not None else None),
        "server_workers": (record.get("resolved") or {}).get("server_workers"),
        "setup_s": record.get("setup_s"),
        "connect_s": connect_s,
        "connections_per_s": round(held / connect_s) if held and connect_s else None,
        "teardown_s": record.get("teardown_s"),
        "wall_s": round(wall, 1),
        "kernel_bytes_per_connection": fp.get("kernel_bytes_per_connection"),
        "user_bytes_per_connection": fp.get("user_bytes_per_connection"),
        "host_slab_bytes_per_connection": fp.get("host_slab_bytes_per_connection"),
        "host_tcp_mem_pages_per_connection": fp.get("host_tcp_mem_pages_per_connection"),
        "peak_conntrack_server_namespace": fp.get("server_namespace_conntrack"),
        "peak_conntrack_host": fp.get("host_conntrack_count"),
        "conntrack_host_run": fp.get("host_conntrack_run"),
        "host_limits_binding": [lim for lim in record.get("host_limits") or [] if lim["binds"]],
        "notes": record.get("notes"),
        "orphans_before": tcp(before, "orphan"),
        "orphans_after_teardown": tcp(after, "orphan"),
        f"orphans_{SETTLE_AFTER_S}s_later": tcp(later, "orphan"),
        "tw_after_teardown": tcp(after, "tw"),
        "tcp_alloc_before": tcp(before, "alloc"),
        "tcp_alloc_after_teardown": tcp(after, "alloc"),
        "host_before": before,
        # the rung's peak: the host's memory in use (MemTotal - MemAvailable) at its lowest
        # MemAvailable, against before the run
        "peak_used_bytes": (watch.lowest["MemTotal"] - watch.lowest["MemAvailable"]
                            if watch.lowest else None),
        "used_bytes_before": before.get("MemTotal", 0) - before.get("MemAvailable", 0),
        "peak_slab_bytes": watch.lowest.get("Slab"),
        "reclaim_during_run": reclaim,  # /proc/vmstat deltas over the whole run
    }
    print(f"{point.id}: {record['status']}, {held:,} connections held in "
          f"{connect_s or 0:.1f} s ({out['connections_per_s'] or 0:,}/s), setup "
          f"{record.get('setup_s') or 0:.1f} s, teardown {record.get('teardown_s') or 0:.1f} s, "
          f"kernel {out['kernel_bytes_per_connection']} B + user "
          f"{out['user_bytes_per_connection']} B per connection (host slab "
          f"{out['host_slab_bytes_per_connection']} B), orphans after teardown "
          f"{out['orphans_after_teardown']} (before {out['orphans_before']}), peak memory in use "
          f"{(out['peak_used_bytes'] or 0) / 2**30:.1f} GiB (before "
          f"{out['used_bytes_before'] / 2**30:.1f} GiB), page reclaim {reclaim}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/million.yaml")
    parser.add_argument("--rungs", default="1000000",
                        help="connections of the loopback rungs to run, comma-separated, "
                        "'all' or 'none'")
    parser.add_argument("--ceiling", action="store_true",
                        help="also the ceiling rung (connections: ceiling, ~1.2 M here)")
    parser.add_argument("--bridge", action="store_true",
                        help="also the config's bridge points (they fill the host's conntrack "
                        "table: never on a shared host)")
    parser.add_argument("--shared", action="store_true",
                        help="run even while other tcplimits containers run")
    parser.add_argument("--out", default="benchmarks/results/million.json")
    parser.add_argument("--runs-dir", default=None,
                        help="keep each rung's run directory here (for `tcplimits dataset` "
                        "and the report); default: a temporary directory")
    args = parser.parse_args()
    client = docker.from_env()
    others = client.containers.list(filters={"label": "tcplimits=1"}, sparse=True)
    if others and not args.shared:
        print(f"{len(others)} other tcplimits container(s) running: timings and memory would "
              "be shared; wait, or pass --shared", file=sys.stderr)
        return 2
    rungs = ({"all": None, "none": set()}.get(args.rungs)
             if args.rungs in ("all", "none") else {int(r) for r in args.rungs.split(",")})
    chosen = [p for p in points(load_config(args.config))
              if (args.bridge if p.params.network == "bridge"
                  else rungs is None or predicted_connections(p) in rungs
                  or (args.ceiling and p.params.connections == "ceiling"))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.runs_dir or tmp)
        for point in chosen:
            rows.append(one(point, workdir, client))
            results.write_json({"host": footprint.host_facts(), "rungs": rows}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
