"""Benchmark (not a test): the seed's own workload — two client containers of five processes,
range 1024-65535, connecting until every port is taken (2 x 64,511 connections) — run by the
agents (a tcplimits run) and by a C loop of the same shape over the same path, alternated
(C, agent, agent, C by default) in one run, so that the ratio cancels the machine's drift.

The same path: the C rounds use the engine's own plan for the seed's parameters
(`engine.plan.container_specs`: the same image, the same server agent with the same workers
and backlog, the same client containers with their sysctls, nofile, memory and pids limits
and hardening, on an internal bridge network of their own); only the client containers'
command differs: benchmarks/c/seed_loop.c, compiled static on the host and mounted read-only,
which forks five processes that wait for SIGUSR1, connect until the first failure and hold
everything, as the client agent does. A third kind, c-bare, runs the same C loop and the same
server agent in bare network namespaces joined by a Linux bridge (no Docker, no netfilter
rules, no cgroups; root and iproute2), to say what the Docker path itself costs. Every round
waits for a quiet host first (no orphans of the previous round slowing connect()).

Per round: connections, the longest process's connecting time (loop_s: each process from
its start signal to its failing connect(), measured inside the process), the controller's
connect_s (start signal to the last process reported, agent rounds), the client processes'
CPU seconds (user + system, and split as /proc has them), the second half's rate (connections
per second after the clients together held half of their final total, from the progress
samples), and the host's sockstat when the round began. The summary takes the means of each
kind over the whole run (an A B B A order cancels a drift linear in time) and their ratios.
Measured figures: README's "Benchmarks" and benchmarks/results/seed*.json.

    python benchmarks/bench_seed.py [--order c,agent,agent,c|c,c-bare,c] [--port-range 1024-65535]
                                    [--out benchmarks/results/seed.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

import cbuild
import docker
import polars as pl

from tcplimits import LABEL, RUN_LABEL, results
from tcplimits.config.params import RunParams
from tcplimits.engine import host, probe_engine, run_experiment, runner
from tcplimits.engine.plan import SERVER_PORT, Resolved, container_specs
from tcplimits.image import ensure_image

HERE = Path(__file__).resolve().parent
KINDS = ("agent", "c", "c-bare")
BENCH_DIR = "/bench"
AGENTS_DIR = HERE.parent / "src" / "tcplimits" / "agents"


def seed_params(port_range: str, clients: int, procs: int, nofile: int) -> RunParams:
    """config/seed.yaml's widest point (its experiment settings too)."""
    return RunParams(port_range=port_range, nofile=nofile, clients=clients, procs=procs,
                     connect_timeout=3, timeout=1800)


def second_half_rate(samples: list[tuple[int, int, float, int]]) -> float | None:
    """Connections per second after the clients together held half their final total.
    ``samples``: (client, proc, t_s since its start, connections held then)."""
    if not samples:
        return None
    last: dict[tuple[int, int], int] = {}
    total, half_t = 0, None
    ordered = sorted(samples, key=lambda s: s[2])
    final = sum(max(s[3] for s in samples if s[:2] == key) for key in {s[:2] for s in samples})
    at_half = 0
    for client, proc, t, n in ordered:
        total += n - last.get((client, proc), 0)
        last[(client, proc)] = n
        if half_t is None and total >= final / 2:
            half_t, at_half = t, total
    end = ordered[-1][2]
    return (final - at_half) / (end - half_t) if half_t is not None and end > half_t else None


def sockstat() -> dict:
    state = host.read_state()
    return {k: state.get(k) for k in ("inuse", "orphan", "tw", "tw_all", "conntrack")}


def quiet(params: RunParams) -> dict:
    waited = host.wait_quiet(params.quiet_host_sockets, params.quiet_host_timeout)
    return {"waited_s": round(waited.waited_s, 1), "noisy": waited.reason}


TICK = os.sysconf("SC_CLK_TCK")


def cpu_split(containers) -> dict:
    """User and system CPU seconds of every process in ``containers`` so far (host /proc:
    the engine is local), read once connecting is over and before anything is torn down."""
    user = system = 0
    for container in containers:
        for row in container.top(ps_args="-o pid")["Processes"]:
            try:
                with open(f"/proc/{int(row[0])}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, ValueError):
                continue
            user, system = user + int(fields[11]), system + int(fields[12])
    return {"user_s": round(user / TICK, 2), "system_s": round(system / TICK, 2)}


class Measured(runner.Experiment):
    """The run's own Experiment, reading its clients' user and system CPU time right after
    every client process stopped connecting (before the server is stopped)."""

    last: ClassVar[dict] = {}

    def collect_server(self) -> None:
        Measured.last = cpu_split([self.containers[r] for r in self.client_roles])
        super().collect_server()


def agent_round(client, params: RunParams, workdir: Path) -> dict:
    run_id = f"bench-seed-{uuid.uuid4().hex[:8]}"
    before = sockstat()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    record = run_experiment(params, workdir / run_id, run_id=run_id, progress=False,
                            client=client, log=lambda m: None)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    rows = results.read_table(workdir / run_id, results.CLIENTS_FILE)
    series = results.read_table(workdir / run_id, results.SERIES_FILE)
    samples = [(r["client"], r["proc"], r["t_s"], r["connections"])
               for r in series.iter_rows(named=True)]
    per_client = rows.group_by("client").agg(pl.col("connections").sum()).sort("client")
    return {"impl": "agent", "run_id": run_id, "status": record["status"],
            "reason": record.get("reason"), "sockstat_before": before,
            "connections": int(rows["connections"].sum()) if rows.height else 0,
            "per_client": per_client["connections"].to_list(),
            "errors": sorted(set(rows["error"].drop_nulls().to_list())),
            "loop_s": rows["elapsed_s"].max() if rows.height else None,
            "connect_s": record.get("connect_s"),
            "client_cpu_s": rows["cpu_s"].sum() if rows.height else None,
            "controller_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime)
                                      - (cpu0.ru_utime + cpu0.ru_stime), 2),
            "second_half_rate": second_half_rate(samples), "client_cpu_split": Measured.last,
            "noisy": record.get("noisy_reason"), "setup_s": record.get("setup_s"),
            "teardown_s": record.get("teardown_s")}


def c_round(client, params: RunParams, image: str, bindir: Path, cap: int) -> dict:
    run_id = f"bench-seed-c-{uuid.uuid4().hex[:8]}"
    labels = {LABEL: "1", RUN_LABEL: run_id}
    resolved = Resolved.of(params, cap)
    specs = container_specs(params, resolved, run_id, image, run_id, labels)
    quiet_state = quiet(params)
    network = client.networks.create(run_id, driver="bridge", internal=True, labels=labels)
    made = []
    try:
        server = client.containers.run(**specs.pop("server"))
        made.append(server)
        cbuild.wait_logged(server, b'"listening"', 60, "bench_seed: the server agent")
        server.reload()
        address = server.attrs["NetworkSettings"]["Networks"][run_id]["IPAddress"]
        loops = []
        for spec in specs.values():
            spec["command"] = [f"{BENCH_DIR}/seed_loop", address, str(SERVER_PORT),
                               str(params.procs), str(resolved.sample_every)]
            spec["volumes"] = {str(bindir): {"bind": BENCH_DIR, "mode": "ro"}}
            loops.append(client.containers.run(**spec))
            made.append(loops[-1])
        for loop in loops:
            cbuild.wait_logged(loop, b"ready", 60, "bench_seed: the C loop")
        before = sockstat()
        started = time.monotonic()
        for loop in loops:
            loop.kill(signal="SIGUSR1")
        outputs, end = {}, started + params.timeout
        while len(outputs) < len(loops):
            if time.monotonic() > end:
                raise SystemExit("bench_seed: the C loops did not finish")
            time.sleep(0.2)  # the controller's drain interval
            for i, loop in enumerate(loops, start=1):
                text = loop.logs().decode()
                if i not in outputs and text.count("\nr ") == params.procs:
                    outputs[i] = text
        connect_s = time.monotonic() - started
        split = cpu_split(loops)
    finally:  # as the engine stops a run: the clients reset theirs, then the server
        for container in made[::-1]:
            try:
                container.kill(signal="SIGTERM")
                container.wait(timeout=60)
            except docker.errors.APIError:
                pass
        for container in made:
            container.remove(force=True)
        network.remove()
    return {**loop_row("c", run_id, outputs, params.procs), "sockstat_before": before,
            "quiet": quiet_state, "connect_s": round(connect_s, 3), "client_cpu_split": split}


BARE_NET = "10.251.0"  # the bare rounds' subnet: namespaces of their own, no Docker


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def bare_round(params: RunParams, binary: Path, workers: int, server_nofile: int,
               sample_every: int) -> dict:
    """The C loop without Docker: a server namespace and one namespace per client, joined by
    veth pairs to a Linux bridge in a namespace of its own (no netfilter rules there, so no
    conntrack, no cgroup limits); the same server agent (run from this checkout, under the
    same nofile) and the same seed_loop. Root and iproute2 needed."""
    tag = uuid.uuid4().hex[:5]
    names = {"switch": f"tlsw{tag}", "server": f"tlsv{tag}",
             **{f"client{i}": f"tlc{i}{tag}" for i in range(1, params.clients + 1)}}
    made, procs = [], []
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            made.append(ns)
        sw = names["switch"]
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for host_id, role in enumerate(["server", *list(names)[2:]], start=1):
            ns = names[role]
            _ip("link", "add", f"v{tag}{host_id}", "netns", ns, "type", "veth",
                "peer", "name", f"p{host_id}", "netns", sw)
            _ip("-n", ns, "link", "set", f"v{tag}{host_id}", "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{BARE_NET}.{host_id}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", sw, "link", "set", f"p{host_id}", "master", "br0", "up")
            if role != "server":
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                                f"net.ipv4.ip_local_port_range={params.port_lo} {params.port_hi}"],
                               check=True)
        quiet_state = quiet(params)
        # The server's events go to a file (the engine reads them as they come): a pipe
        # nobody drains would fill and stop the server in the middle of accepting.
        server_log = tempfile.NamedTemporaryFile("w+", prefix="bench-seed-server-")
        server = subprocess.Popen(
            ["ip", "netns", "exec", names["server"], "prlimit",
             f"--nofile={server_nofile}:{server_nofile}", sys.executable,
             str(AGENTS_DIR / "server.py"), "--port", str(SERVER_PORT), "--workers",
             str(workers), "--backlog", str(params.backlog)],
            stdout=server_log, text=True)
        procs.append(server)
        deadline = time.monotonic() + 30
        while '"listening"' not in Path(server_log.name).read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("bench_seed: the bare server did not listen")
            time.sleep(0.05)
        loops = []
        for role in list(names)[2:]:
            loops.append(subprocess.Popen(
                ["ip", "netns", "exec", names[role], "prlimit",
                 f"--nofile={params.nofile}:{params.nofile}", str(binary), f"{BARE_NET}.1",
                 str(SERVER_PORT), str(params.procs), str(sample_every)],
                stdout=subprocess.PIPE, text=True))
            procs.append(loops[-1])
            if not loops[-1].stdout.readline().startswith("ready"):
                raise SystemExit("bench_seed: the bare C loop did not start")
        before = sockstat()
        started = time.monotonic()
        for loop in loops:
            loop.send_signal(signal.SIGUSR1)
        outputs = {}
        for i, loop in enumerate(loops, start=1):  # each ends with PROCS "r" lines
            lines = []
            while sum(line.startswith("r ") for line in lines) < params.procs:
                line = loop.stdout.readline()
                if not line:
                    raise SystemExit(f"bench_seed: the bare C loop {i} ended early")
                lines.append(line)
            outputs[i] = "".join(lines)
        connect_s = time.monotonic() - started
        split = {"user_s": None, "system_s": None}
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    return {**loop_row("c-bare", f"bare-{tag}", outputs, params.procs),
            "sockstat_before": before, "quiet": quiet_state, "connect_s": round(connect_s, 3),
            "client_cpu_split": split}


def loop_row(impl: str, run_id: str, outputs: dict[int, str], procs_per_client: int) -> dict:
    """A C round's figures from each client's seed_loop output."""
    samples, procs = [], []
    for i, text in outputs.items():
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["p"]:
                samples.append((i, int(words[1]), float(words[2]), int(words[3])))
            elif words[:1] == ["r"]:
                procs.append({"client": i, "proc": int(words[1]), "connections": int(words[2]),
                              "elapsed_s": float(words[3]), "cpu_s": float(words[4]),
                              "error": " ".join(words[5:])})
    return {"impl": impl, "run_id": run_id, "status": "ok",
            "connections": sum(p["connections"] for p in procs),
            "per_client": [sum(p["connections"] for p in procs if p["client"] == i)
                           for i in sorted(outputs)],
            "per_process": [p["connections"] for p in procs],
            "errors": sorted({p["error"] for p in procs}),
            "loop_s": max(p["elapsed_s"] for p in procs),
            "client_cpu_s": round(sum(p["cpu_s"] for p in procs), 3),
            "second_half_rate": second_half_rate(samples)}


def ratios(rounds: list[dict]) -> dict:
    """Means per kind over the whole alternated run (an A B B A order cancels a drift that is
    linear in time) and their ratios, and each agent round against its nearest C round."""
    mean = {impl: {key: statistics.mean(r[key] for r in rounds if r["impl"] == impl)
                   for key in ("loop_s", "connect_s", "client_cpu_s", "second_half_rate")}
            for impl in sorted({r["impl"] for r in rounds})}
    pairs = [("agent", "c"), ("c", "c-bare"), ("agent", "c-bare")]
    out: dict = {"mean": mean, "ratio": {
        f"{a}/{b}": {key: round(mean[a][key] / mean[b][key], 3) for key in mean[a]}
        for a, b in pairs if a in mean and b in mean}}
    c_at = [i for i, r in enumerate(rounds) if r["impl"] == "c"]
    out["agent_rounds"] = [
        {"round": i + 1, "nearest_c_round": j + 1,
         "loop_s_ratio": round(r["loop_s"] / rounds[j]["loop_s"], 3)}
        for i, r in enumerate(rounds) if r["impl"] == "agent" and c_at
        for j in [min(c_at, key=lambda k: abs(k - i))]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="c,agent,agent,c",
                        help="the rounds, comma-separated: agent (a tcplimits run), c (the C "
                        "loop over the same Docker path) or c-bare (the C loop in bare "
                        "namespaces, no Docker; root) (default: %(default)s)")
    parser.add_argument("--port-range", default="1024-65535")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--nofile", type=int, default=15_000)
    parser.add_argument("--out", default=str(HERE / "results" / "seed.json"))
    args = parser.parse_args()
    order = [w.strip() for w in args.order.split(",") if w.strip()]
    if not order or set(order) - set(KINDS):
        parser.error(f"--order: rounds are {', '.join(KINDS)}, got {args.order!r}")
    params = seed_params(args.port_range, args.clients, args.procs, args.nofile)
    client = docker.from_env()
    image = ensure_image(client).tags[0]
    cap = probe_engine(client, image=image, log=lambda m: None)["engine_nofile_cap"]
    runner.Experiment = Measured  # the benchmark's runs only
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bindir = workdir / "bin"
        bindir.mkdir()
        cbuild.require(cbuild.compile_static("c/seed_loop.c", bindir), "bench_seed")
        for n, impl in enumerate(order, start=1):
            if impl == "agent":
                row = agent_round(client, params, workdir)
            elif impl == "c":
                row = c_round(client, params, image, bindir, cap)
            else:
                resolved = Resolved.of(params, cap)
                row = bare_round(params, bindir / "seed_loop", resolved.server_workers,
                                 resolved.server_nofile, resolved.sample_every)
            rounds.append(row)
            rate = row["second_half_rate"]
            print(f"round {n} {impl:6}: {row['connections']:,} {row['errors']} loop "
                  f"{row['loop_s']:.1f} s, connect {row['connect_s']:.1f} s, client CPU "
                  f"{row['client_cpu_s']:.1f} s, second half "
                  f"{rate if rate is None else round(rate)}/s, {row['client_cpu_split']}",
                  flush=True)
    summary = ratios(rounds)
    results.write_json({"params": params.to_dict(), "order": order, "rounds": rounds,
                        "ratios": summary}, Path(args.out))
    for pair, ratio in summary["ratio"].items():
        print(f"{pair} (means over the run): loop {ratio['loop_s']}x, connect "
              f"{ratio['connect_s']}x, client CPU {ratio['client_cpu_s']}x, second-half rate "
              f"{ratio['second_half_rate']}x")


if __name__ == "__main__":
    main()
