"""Benchmark teardown approaches (not a test): what a 10,000-port exhaustion leaves in the
host kernel once `run_experiment` returns, and how long teardown takes, for

  kill_fin   the containers removed at once (SIGKILL), connections closed by process exit (FIN)
             -- the engine before issue 8
  stop_fin   agents stopped first (SIGTERM, waited for), connections closed with FIN
  stop_rst   agents stopped first, every connection reset (SO_LINGER 0) -- the default now

Left sockets are deltas of the host's kernel-wide counters (orphans and allocated sockets
from /proc/net/sockstat, TIME-WAIT of every namespace from /proc/slabinfo) across teardown:
read just before the Experiment tears down (every connection open) and when the run returns,
and again --after seconds later. The engine is shared: other runs move these counters too
(the short teardown window keeps that small), so each variant runs --repeat times.

    python benchmarks/bench_teardown.py [--repeat 2] [--after 20] [--out benchmarks/results/teardown.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import docker

from tcplimits import engine, host, results
from tcplimits.params import RunParams

VARIANTS = {"kill_fin": (0, "graceful"), "stop_fin": (10, "graceful"),
            "stop_rst": (10, "abort")}


def _with_close(specs_fn, mode):
    def specs(*args, **kwargs):
        out = specs_fn(*args, **kwargs)
        for spec in out.values():
            spec["command"] = [*spec["command"], "--close", mode]
        return out
    return specs


def one(variant: str, params: RunParams, workdir: Path, client, after_s: float) -> dict:
    stop_s, mode = VARIANTS[variant]
    original = (engine.AGENT_STOP_S, engine.container_specs, engine.Experiment.__exit__)
    engine.AGENT_STOP_S, engine.container_specs = stop_s, _with_close(original[1], mode)
    states = {}

    def exit_measured(self, *exc):
        states["before"] = host.read_state()
        return original[2](self, *exc)

    engine.Experiment.__exit__ = exit_measured
    try:
        name = f"bench-teardown-{variant}-{int(time.time())}"
        record = engine.run_experiment(params, workdir / name, run_id=name, progress=False,
                                       client=client, log=lambda m: None)
        at_return = host.read_state()
        time.sleep(after_s)
        later = host.read_state()
    finally:
        engine.AGENT_STOP_S, engine.container_specs, engine.Experiment.__exit__ = original
    before = states["before"]
    assert record["status"] == "ok", record["reason"]

    def delta(state, key):
        return state[key] - before[key] if state[key] is not None and before[key] is not None else None

    return {
        "variant": variant, "connections": record["totals"]["connections"],
        "connect_s": record["connect_s"], "teardown_s": record["teardown_s"],
        "orphan_at_return": delta(at_return, "orphan"), "tw_at_return": delta(at_return, "tw_all"),
        "alloc_at_return": delta(at_return, "alloc"),
        "orphan_later": delta(later, "orphan"), "tw_later": delta(later, "tw_all"),
        "alloc_later": delta(later, "alloc"),
        "orphan_before": before["orphan"], "tw_before": before["tw_all"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--after", type=float, default=20.0,
                        help="seconds after the run returns for the second reading")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/teardown.json")
    args = parser.parse_args()
    client = docker.from_env()
    params = RunParams(port_range="40000-49999", nofile=15000, procs=1, clients=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for variant in args.variants.split(","):
                rows.append(one(variant, params, Path(tmp), client, args.after))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for variant in args.variants.split(","):
        mine = [r for r in rows if r["variant"] == variant]
        summary[variant] = {k: statistics.median(r[k] for r in mine)
                            for k in mine[0] if k != "variant" and mine[0][k] is not None}
    results.write_json({"params": params.to_dict(), "after_s": args.after, "runs": rows,
                        "median": summary}, Path(args.out))
    for variant, s in summary.items():
        print(f"{variant:9} orphans at return {s['orphan_at_return']:+8.0f}  TIME-WAIT "
              f"{s.get('tw_at_return', float('nan')):+8.0f}  after {args.after:.0f} s: orphans "
              f"{s['orphan_later']:+8.0f} tw {s.get('tw_later', float('nan')):+8.0f}  "
              f"teardown {s['teardown_s']:.2f} s  connect {s['connect_s']:.2f} s")


if __name__ == "__main__":
    main()
