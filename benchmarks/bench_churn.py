"""Benchmark the churn loop (not a test): the highest open-close rate one client process
reaches with the agent (Python, agents/churn.py) against the same loop in C
(benchmarks/churn/churn_loop.c), side by side in one run, in the same image, against the
same server: one client container alternates the two loops in slices of a second, so that
both see the same moments of a machine shared with other work.

The C program is compiled on the host (gcc -static) and mounted read-only into the
containers: no registry, nothing added to the image. The server is the C epoll loop, so
that it is not what bounds the client; the closer is the server, so that no port pool runs
out. CPU time (user, sys) per connection says what bounds each loop.

    python benchmarks/bench_churn.py [--rounds 20] [--seconds 1] [--out benchmarks/results/churn.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import docker

import cbuild

from tcplimits import LABEL, RUN_LABEL, results
from tcplimits.image import ensure_image

HERE = Path(__file__).resolve().parent
AGENTS = "/opt/tcplimits/agents"
PORT = 5000
HARDENED = dict(cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                user="65534:65534", detach=True)

# Runs in one client container: alternates the agent's loop (in this process) and the C
# loop (a child process) for ``slice`` seconds each, ``rounds`` times, so that both see the
# same moments of a machine shared with other work. One JSON line per slice.
DRIVER = """
import json, resource, subprocess, sys, time
sys.path.insert(0, %r)
import churn, common
server, rounds, slice_s, closer = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
results = []
common.emit = lambda event, **f: results.append(dict(f, event=event))  # keep lines, print ours
for r in range(1, rounds + 1):
    before = resource.getrusage(resource.RUSAGE_SELF)
    results.clear()
    churn.churn_loop([(None, server, %d)], client=1, proc=1, rate=None, duration=slice_s,
                     closer=closer, connect_timeout=3.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    res = [e for e in results if e["event"] == "result"][0]
    print(json.dumps(dict(impl="python", round=r, connections=res["connections"],
                          error=res["error"], elapsed_s=res["elapsed_s"],
                          user_s=after.ru_utime - before.ru_utime,
                          sys_s=after.ru_stime - before.ru_stime)), flush=True)
    out = subprocess.run(["/bench/churn_loop", "client", server, "%d", str(slice_s), closer[0]],
                         capture_output=True, text=True).stdout
    c = json.loads(out)
    print(json.dumps(dict(impl="c", round=r, connections=c["connections"],
                          error=c["errno"] or "DURATION", elapsed_s=c["elapsed_s"],
                          user_s=c["user_s"], sys_s=c["sys_s"])), flush=True)
""" % (AGENTS, PORT, PORT)


def slices(client, image: str, network: str, labels: dict, bindir: Path, server_ip: str,
           rounds: int, slice_s: float, closer: str) -> list[dict]:
    container = client.containers.run(
        image, ["python3", "-c", DRIVER, server_ip, str(rounds), str(slice_s), closer],
        network=network, labels=labels, volumes={str(bindir): {"bind": "/bench", "mode": "ro"}},
        sysctls={"net.ipv4.ip_local_port_range": "40000 40999"}, pids_limit=16, **HARDENED)
    try:
        status = container.wait(timeout=rounds * slice_s * 2 + 120)
        text = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    if status.get("StatusCode") != 0:
        raise SystemExit(f"bench_churn: the driver failed: {text[-2000:]}")
    rows = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
    for row in rows:
        n = max(row["connections"], 1)
        row["rate"] = row["connections"] / row["elapsed_s"]
        row["user_us_per_conn"] = 1e6 * row["user_s"] / n
        row["sys_us_per_conn"] = 1e6 * row["sys_s"] / n
        row["cpu_us_per_conn"] = row["user_us_per_conn"] + row["sys_us_per_conn"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per slice")
    parser.add_argument("--out", default=str(HERE / "results" / "churn.json"))
    args = parser.parse_args()
    client = docker.from_env()
    image = ensure_image(client).tags[0]
    run = f"bench-churn-{uuid.uuid4().hex[:6]}"
    labels = {LABEL: "1", RUN_LABEL: run}
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp)
        bindir.chmod(0o755)
        cbuild.require(cbuild.compile_static("churn/churn_loop.c", bindir), "bench_churn")
        network = client.networks.create(run, driver="bridge", internal=True, labels=labels)
        server = None
        try:
            server = client.containers.run(
                image, ["/bench/churn_loop", "server", str(PORT)], network=run, labels=labels,
                name=f"{run}-server", volumes={str(bindir): {"bind": "/bench", "mode": "ro"}},
                **HARDENED)
            time.sleep(1.0)
            server.reload()
            server_ip = server.attrs["NetworkSettings"]["Networks"][run]["IPAddress"]
            rows = slices(client, image, run, labels, bindir, server_ip, args.rounds,
                          args.seconds, "server")
        finally:
            if server is not None:
                server.remove(force=True)
            network.remove()
    for row in rows:
        print(f"round {row['round']:>2} {row['impl']:>6}: {row['rate']:8,.0f} conn/s  "
              f"user {row['user_us_per_conn']:5.1f} us  sys {row['sys_us_per_conn']:5.1f} us "
              "per connection")
    by = {impl: [r for r in rows if r["impl"] == impl] for impl in ("python", "c")}
    med = {impl: statistics.median(r["rate"] for r in by[impl]) for impl in by}
    ratios = [p["rate"] / c["rate"] for p, c in zip(by["python"], by["c"])]
    summary = {
        "image": image, "slice_s": args.seconds, "rounds": rows,
        "median_rate": med, "python_over_c_per_round": ratios,
        "python_over_c": statistics.median(ratios),
        "cpu_us_per_conn": {impl: {k: statistics.median(r[k] for r in by[impl])
                                   for k in ("user_us_per_conn", "sys_us_per_conn",
                                             "cpu_us_per_conn")}
                            for impl in by},
    }
    results.write_json(summary, args.out)
    cpu = summary["cpu_us_per_conn"]
    print(f"python / c = {summary['python_over_c']:.2f} (median of per-round ratios); "
          f"median rates: python {med['python']:,.0f}/s, c {med['c']:,.0f}/s; CPU per "
          f"connection: python {cpu['python']['cpu_us_per_conn']:.0f} us, c "
          f"{cpu['c']['cpu_us_per_conn']:.0f} us; written to {args.out}")


if __name__ == "__main__":
    main()
