"""Benchmark teardown approaches (not a test): what a 10,000-port exhaustion leaves in the
host kernel once `run_experiment` returns, and how long teardown takes, for

  kill_fin   the containers removed at once (SIGKILL), connections closed by process exit (FIN)
             -- the engine before issue 8
  stop_fin   agents stopped first (SIGTERM, waited for), connections closed with FIN
  stop_rst   agents stopped first, every connection reset (SO_LINGER 0) -- the default now

Left sockets are counted exactly in the run's own network namespaces, kept alive past the
containers by tcplimits.engine.host.NamespaceWatch: orphans (FIN_WAIT1/2, CLOSING, LAST_ACK),
TIME_WAIT and CLOSE_WAIT, when the run returns and --after seconds later. (Without the
watch the namespace goes with its last container: TIME-WAIT entries are purged with it,
orphans live on until they time out.) Next to them, deltas of the host's kernel-wide
counters across teardown, which every other run on the shared engine moves too.

    python benchmarks/bench_teardown.py [--repeat 2] [--after 20] \
        [--out benchmarks/results/teardown.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import docker

from tcplimits.engine import host
from tcplimits import results
from tcplimits.engine import experiment as engine, run_experiment, teardown
from tcplimits.config.params import RunParams

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
    original = (teardown.AGENT_STOP_S, engine.container_specs, engine.Experiment.__exit__,
                engine.Experiment.wait_quiet)
    teardown.AGENT_STOP_S, engine.container_specs = stop_s, _with_close(original[1], mode)
    states, watch = {}, []

    def watched_wait_quiet(self):
        # Every container is up and nothing is connected yet: watch their namespaces.
        watch.append(host.NamespaceWatch(self.client, self.image, self.containers,
                                         self.run_id))
        return original[3](self)

    def exit_measured(self, *exc):
        states["before"] = host.read_state()
        return original[2](self, *exc)

    engine.Experiment.__exit__ = exit_measured
    engine.Experiment.wait_quiet = watched_wait_quiet
    try:
        name = f"bench-teardown-{variant}-{int(time.time())}"
        record = run_experiment(params, workdir / name, run_id=name, progress=False,
                                       client=client, log=lambda m: None)
        at_return = host.read_state()
        left = watch[0].lingering()
        time.sleep(after_s)
        later = host.read_state()
        left_later = watch[0].lingering()
    finally:
        (teardown.AGENT_STOP_S, engine.container_specs, engine.Experiment.__exit__,
         engine.Experiment.wait_quiet) = original
        for w in watch:
            w.remove()
    assert record["status"] == "ok", record["reason"]
    before = states["before"]

    def delta(state, key):
        if state[key] is None or before[key] is None:
            return None
        return state[key] - before[key]

    def total(counts, states_=("FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK")):
        return sum(n for role in counts.values() for s, n in role.items() if s in states_)

    return {
        "variant": variant, "connections": record["totals"]["connections"],
        "connect_s": record["connect_s"], "teardown_s": record["teardown_s"],
        # exact, in the run's own namespaces
        "orphans_left": total(left), "time_wait_left": total(left, ("TIME_WAIT",)),
        "close_wait_left": total(left, ("CLOSE_WAIT",)),
        "orphans_left_later": total(left_later),
        "time_wait_left_later": total(left_later, ("TIME_WAIT",)),
        "lingering": left,
        # host-wide deltas across teardown (other runs on the engine move these too)
        "host_orphan_delta": delta(at_return, "orphan"),
        "host_tw_delta": delta(at_return, "tw_all"),
        "host_alloc_delta": delta(at_return, "alloc"),
        "host_orphan_delta_later": delta(later, "orphan"),
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
    # No quiet wait: what the host held before does not change what this run leaves.
    params = RunParams(port_range="40000-49999", nofile=15000, procs=1, clients=1,
                       quiet_host_timeout=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for variant in args.variants.split(","):
                rows.append(one(variant, params, Path(tmp), client, args.after))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for variant in args.variants.split(","):
        mine = [r for r in rows if r["variant"] == variant]
        summary[variant] = {k: statistics.median(r[k] for r in mine) for k in mine[0]
                            if k not in ("variant", "lingering") and mine[0][k] is not None}
    results.write_json({"params": params.to_dict(), "after_s": args.after, "runs": rows,
                        "median": summary}, Path(args.out))
    print(f"medians over {args.repeat} runs of {params.port_count:,} ports; left in the run's "
          "namespaces when run_experiment returned (and --after s later):")
    for variant, s in summary.items():
        print(f"{variant:9} orphans {s['orphans_left']:6.0f} ({s['orphans_left_later']:6.0f})  "
              f"TIME-WAIT {s['time_wait_left']:6.0f} ({s['time_wait_left_later']:6.0f})  "
              f"CLOSE-WAIT {s['close_wait_left']:6.0f}  host orphans {s['host_orphan_delta']:+7.0f}"
              f"  teardown {s['teardown_s']:.2f} s  connect {s['connect_s']:.2f} s")


if __name__ == "__main__":
    main()
