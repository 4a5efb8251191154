"""Benchmark the top rung's connect rate (not a test, issue 22): the agents holding N
connections over loopback (a tcplimits run, the layout of config/million.yaml: 12,500 per
client process, 10 processes per client container, server workers auto) against a C server
and C clients holding the same N over loopback (benchmarks/c/hold_pair.c: the same numbers of
processes and workers, the same 127.x destinations, and the server agent's design: its
workers accept in turns, one awake at a time taking a batch per wake-up), alternating (the
agents first in odd rounds, last in even ones), so that both see the same moments of a machine
shared with other work. Every run starts from the same memory state: --settle seconds idle
first (40 where the machine is a VM whose balloon reports free pages to its hypervisor, see
SETTLE_S; the run's JSON says which).

    python benchmarks/bench_ceiling.py                        # 60,000 connections, 3 rounds
    python benchmarks/bench_ceiling.py --connections ceiling --machine-to-myself --eager

The C pair runs as the agents do, a server container and a client container joining its
network namespace (each side's sockets charged to its own cgroup, the server weighted as all
client containers together: plan.server_cpu_shares); --one-container adds the pair in one
container, which shows what the split itself costs; --eager adds the C pair with every worker
blocked in accept(), each connection waking one (the server agent's design before the turns).

Written per round: connections held, seconds from the first connect() to the last (for the
agents the slowest process's own loop time, and the controller's connect_s beside it: that
also counts signalling each client container and reading each result through the engine's
log streams), the rate, CPU per connection of the client processes and of the accept workers
(both; the client agent's cpu_s also counts its held check after the loop, the server agent's
its result's cpu_s, from logs/server.log; benchmarks/bench_agent_loop.py splits the loops
alone, outside Docker), the SYNs the server's namespace dropped at a full accept queue (each a
1 s retransmit for one client process), for the agents also setup and teardown, kernel and
user bytes per connection and the host's Slab growth (the peak memory the rung takes). The
summary is the median rate of each and the agents' ratio to the C pair of their own design
(issue 22 asks for at least 0.9). Above MOST_SHARED connections (the host's ceiling is ~1.2 M
here: 11 GB and two descriptors per connection) it refuses to run unless told the machine is
its own.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import polars as pl
from docker.types import Ulimit

import cbuild

from tcplimits import LABEL, RUN_LABEL, model, results
from tcplimits.agents import common
from tcplimits.config.params import RunParams
from tcplimits.engine import footprint, hostceiling, probe_engine, run_experiment
from tcplimits.engine.plan import Resolved, hardening, server_cpu_shares

HERE = Path(__file__).resolve().parent
PER_PROCESS = 12_500        # config/million.yaml's max_connections
PROCS_PER_CLIENT = 10
MOST_SHARED = 100_000       # more only with --machine-to-myself
# A VM whose balloon reports free pages hands memory freed in the guest back to its host
# (mm/page_reporting.c: about 30 s for all of it on an idle guest); the next touch of a
# returned page faults in the host. A run that starts soon after the previous one's teardown
# gets memory still backed; one that starts later pays the first touch of every new slab page
# (measured at the top rung, in allocate_slab and inode_init_once: 23.5 against 10.6-12.5 us a
# connection, the same C pair 48,739/s against 60,898/s). So every run starts from the same
# state: the freed memory returned.
SETTLE_S = 40
BALLOON_FEATURES = "/sys/bus/virtio/drivers/virtio_balloon"
F_REPORTING = 5  # VIRTIO_BALLOON_F_REPORTING, <linux/virtio_balloon.h>


def layout(n: int) -> RunParams:
    processes = math.ceil(n / PER_PROCESS)
    clients = math.ceil(processes / PROCS_PER_CLIENT)
    procs = math.ceil(processes / clients)
    return RunParams(network="loopback", port_range="1024-65535", nofile=20_000,
                     clients=clients, procs=procs, max_connections=n // (clients * procs),
                     backlog=4096, connect_timeout=10, quiet_host_timeout=30, timeout=1800)


def agents(client, params: RunParams, workdir: Path) -> dict:
    run_id = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    before = footprint.host_facts()
    record = run_experiment(params, workdir / run_id, run_id=run_id, progress=False,
                            client=client, log=lambda m: None)
    fp = record.get("footprint") or {}
    held = (record.get("totals") or {}).get("connections") or 0
    table = workdir / run_id / results.CLIENTS_FILE
    # The agents' own loop time, from each process's first connect() to its last (as the C
    # pair measures it); the controller's connect_s adds signalling every client container
    # and reading every result through the engine's log streams.
    rows = pl.read_parquet(table) if table.exists() else None
    loop_s = rows["elapsed_s"].max() if rows is not None else None
    cpu = rows["cpu_s"].sum() if rows is not None else None
    server_cpu = server_cpu_s(workdir / run_id / results.LOGS_DIR / "server.log")
    return {"impl": "agents", "status": record["status"], "reason": record.get("reason"),
            "connections": held, "connect_s": loop_s, "controller_connect_s":
            record.get("connect_s"),
            "rate": round(held / loop_s) if held and loop_s else None,
            "controller_rate": (round(held / record["connect_s"])
                                if held and record.get("connect_s") else None),
            "client_cpu_us_per_connection": round(1e6 * cpu / held, 1) if held and cpu else None,
            "server_cpu_us_per_connection": (round(1e6 * server_cpu / held, 1)
                                             if held and server_cpu else None),
            "server_workers": (record.get("resolved") or {}).get("server_workers"),
            # a full accept queue drops SYNs: each costs its connect() a 1 s retransmit
            "listen_drops": (record.get("facts") or {}).get("listen_drops"),
            "process_loop_s": ([round(rows["elapsed_s"].min(), 3),
                                round(rows["elapsed_s"].median(), 3), round(loop_s, 3)]
                               if rows is not None else None),
            "setup_s": record.get("setup_s"), "teardown_s": record.get("teardown_s"),
            "noisy": record.get("noisy_reason"),
            "kernel_bytes_per_connection": fp.get("kernel_bytes_per_connection"),
            "user_bytes_per_connection": fp.get("user_bytes_per_connection"),
            "host_slab_bytes_per_connection": fp.get("host_slab_bytes_per_connection"),
            "mem_available_before": before.get("MemAvailable")}


def server_cpu_s(log: Path) -> float | None:
    """CPU seconds of the agent server's workers, from their result events (cpu_s: until
    SIGTERM, before each resets what it holds), or None from agents that do not say it."""
    if not log.exists():
        return None
    spent = [event.get("cpu_s") for event in map(json.loads, (
        line for line in log.read_text().splitlines() if line.startswith("{")))
        if event.get("event") == "result"]
    return sum(spent) if spent and None not in spent else None


def c_pair(client, image: str, bindir: Path, params: RunParams, workers: int,
           containers: str = "split", spread: str = "shared", design: str = "turns") -> dict:
    """The C pair holding what ``params`` asks. ``containers`` "split": a server container and
    a client container joining its network namespace, as the agents are (each side's sockets
    charged to its own cgroup, the server weighted as all client containers together, here
    one: plan.server_cpu_shares); "one": both in one container. ``design``: how the C workers
    accept (hold_pair.c: "turns" as the server agent does, or "eager")."""
    run_id = f"bench-ceiling-c-{uuid.uuid4().hex[:8]}"
    n = params.clients * params.procs * params.max_connections
    procs = params.clients * params.procs
    dests = str(model.destinations(params))
    common = dict(labels={LABEL: "1", RUN_LABEL: run_id}, detach=True,
                  ulimits=[Ulimit(name="nofile", soft=20_000, hard=20_000)],
                  volumes={str(bindir): {"bind": "/bench", "mode": "ro"}}, **hardening())
    sysctls = {"net.ipv4.ip_local_port_range": f"{params.port_lo} {params.port_hi}"}
    made = []
    try:
        if containers == "one":
            loop = client.containers.run(
                image, ["/bench/hold_pair", "both", str(n), str(params.clients),
                        str(params.procs), str(workers), dests, spread, design],
                name=run_id, network_mode="none", sysctls=sysctls,
                pids_limit=procs + workers + 8, **common)
            made.append(loop)
            drops_before = netns_listen_drops(loop)
        else:
            server = client.containers.run(
                image, ["/bench/hold_pair", "server", str(workers), design],
                name=f"{run_id}-server", network_mode="none", sysctls=sysctls,
                pids_limit=workers + 8, cpu_shares=server_cpu_shares(1), **common)
            made.append(server)
            cbuild.wait_logged(server, b"listening", 30, "bench_ceiling: the C server")
            drops_before = netns_listen_drops(server)
            loop = client.containers.run(
                image, ["/bench/hold_pair", "client", str(n), str(params.clients),
                        str(params.procs), dests, spread], name=f"{run_id}-client",
                network_mode=f"container:{server.id}", pids_limit=procs + 8, **common)
            made.append(loop)
        code = loop.wait(timeout=1800).get("StatusCode")
        words = loop.logs(stdout=True, stderr=False).decode().split()
        drops = netns_listen_drops(server if containers != "one" else loop)
        if containers != "one":
            server.kill(signal="SIGTERM")
            server.wait(timeout=60)
            words[-1] = server.logs(stdout=True, stderr=False).decode().split()[-1]
    finally:
        for container in reversed(made):
            container.remove(force=True)
    if code != 0 or len(words) < 5:
        raise SystemExit(f"bench_ceiling: the C pair failed ({code}): {' '.join(words)}")
    held, seconds, cpu, server_cpu = (int(words[0]), float(words[1]), float(words[2]),
                                      float(words[-1]))
    impl = "c" + ("" if containers == "split" else f"-{containers}") \
        + ("" if design == "turns" else f"-{design}")
    return {"impl": impl, "connections": held,
            "connect_s": round(seconds, 3),
            "rate": round(held / seconds) if seconds else None, "error": " ".join(words[3:-1]),
            "server_cpu_us_per_connection": round(1e6 * server_cpu / held, 1) if held else None,
            "client_cpu_us_per_connection": round(1e6 * cpu / held, 1) if held else None,
            "server_workers": workers,
            "listen_drops": (drops - drops_before if None not in (drops, drops_before)
                             else None)}


def free_page_reporting() -> bool:
    """Whether this machine is a VM whose balloon reports free pages to its host."""
    for features in Path(BALLOON_FEATURES).glob("virtio*/features"):
        bits = features.read_text().strip()
        if len(bits) > F_REPORTING and bits[F_REPORTING] == "1":
            return True
    return False


def netns_listen_drops(container) -> int | None:
    """TcpExt ListenDrops of ``container``'s network namespace (read from the host through
    its first process), or None once it is gone or unreadable."""
    container.reload()
    return common.listen_drops(f"/proc/{container.attrs['State'].get('Pid')}/net")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="60000",
                        help="connections per round, or 'ceiling' (tcplimits ceiling's loopback "
                        "figure)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-container", action="store_true",
                        help="also the C pair in one container (both sides in one cgroup)")
    parser.add_argument("--eager", action="store_true",
                        help="also the C pair with every worker blocked in accept() (the server "
                        "agent's design before it took turns)")
    parser.add_argument("--machine-to-myself", action="store_true",
                        help=f"allow more than {MOST_SHARED:,} connections")
    parser.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                        help=f"idle seconds before every run (default {SETTLE_S} where the "
                        "VM's balloon reports free pages, which a run that starts sooner "
                        "finds still backed, else 5)")
    parser.add_argument("--out", default=str(HERE / "results" / "ceiling.json"))
    args = parser.parse_args()
    client = docker.from_env()
    cap = probe_engine(client)["engine_nofile_cap"]
    facts = footprint.host_facts()
    found = hostceiling.ceilings(facts, cap)["loopback"]
    n = found.connections if args.connections == "ceiling" else int(args.connections)
    if n > MOST_SHARED and not args.machine_to_myself:
        print(f"bench_ceiling: {n:,} connections take the machine (~{n * 9.4e3 / 2**30:.0f} GiB, "
              f"{2 * n:,} descriptors): pass --machine-to-myself on a host nobody else uses",
              file=sys.stderr)
        return 2
    if n > found.connections:
        print(f"bench_ceiling: {n:,} is above this host's ceiling ({found.connections:,}, "
              f"{found.binding.name})", file=sys.stderr)
        return 2
    params = layout(n)
    reporting = free_page_reporting()
    settle_s = args.settle if args.settle is not None else SETTLE_S if reporting else 5.0
    from tcplimits.image import ensure_image

    image = ensure_image(client).tags[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp) / "bin"
        bindir.mkdir()
        cbuild.require(cbuild.compile_static("c/hold_pair.c", bindir), "bench_ceiling")
        workers = Resolved.of(params, cap).server_workers  # as the agents' run resolves it
        runs = {"agents": lambda: agents(client, params, Path(tmp)),  # workers read when run
                "c": lambda: c_pair(client, image, bindir, params, workers),
                "c-one": lambda: c_pair(client, image, bindir, params, workers, "one"),
                "c-eager": lambda: c_pair(client, image, bindir, params, workers,
                                          design="eager")}
        for r in range(1, args.rounds + 1):
            order = ["agents", "c"] + ["c-one"] * args.one_container + ["c-eager"] * args.eager
            if r % 2 == 0:  # the agents first in odd rounds, last in even ones
                order = order[1:] + order[:1]
            done = []
            for impl in order:
                print(f"round {r} {impl:>7}: {settle_s:g} s idle first", flush=True)
                time.sleep(settle_s)
                done.append(runs[impl]())
                if impl == "agents":
                    workers = done[-1]["server_workers"] or workers
            for row in done:
                rows.append({"round": r, **row})
                print(f"round {r} {row['impl']:>6}: {row['connections']:,} in "
                      f"{row['connect_s'] or 0:.2f} s, {row['rate'] or 0:,}/s, CPU per "
                      f"connection: client {row['client_cpu_us_per_connection']} us, server "
                      f"{row.get('server_cpu_us_per_connection')} us, listen drops "
                      f"{row.get('listen_drops')}"
                      + (f" (controller: {row['controller_connect_s']:.2f} s, "
                         f"{row['controller_rate']:,}/s)" if row.get("controller_rate") else ""),
                      flush=True)
    rate = {impl: statistics.median([r["rate"] for r in rows if r["impl"] == impl and r["rate"]]
                                    or [0]) for impl in {r["impl"] for r in rows}}
    by_round = {(r["round"], r["impl"]): r["rate"] for r in rows}
    ratios = [by_round[(k, "agents")] / by_round[(k, "c")] for k in range(1, args.rounds + 1)
              if by_round.get((k, "agents")) and by_round.get((k, "c"))]
    controller = [r["controller_rate"] for r in rows if r.get("controller_rate")]
    impls = sorted({r["impl"] for r in rows})
    cpu = {f"{impl} {side}": statistics.median([r[f"{side}_cpu_us_per_connection"] for r in rows
                                                if r["impl"] == impl
                                                and r.get(f"{side}_cpu_us_per_connection")]
                                               or [0])
           for impl in impls for side in ("client", "server")}
    summary = {"connections": n,
               "layout": {"clients": params.clients, "procs": params.procs,
                          "per_process": params.max_connections},
               "rate_agents": rate["agents"], "rate_c": rate["c"], "rates": rate,
               "rate_agents_controller": statistics.median(controller) if controller else None,
               "cpu_us_per_connection": cpu,
               "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
               "ratios": [round(x, 3) for x in ratios], "ceiling": found.to_dict()}
    results.write_json({"host": facts, "free_page_reporting": reporting, "settle_s": settle_s,
                        "rounds": rows, "summary": summary}, Path(args.out))
    print(f"agents {rate['agents']:,.0f}/s, C pair {rate['c']:,.0f}/s: ratio "
          f"{summary['ratio_median']} (per round {summary['ratios']}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
