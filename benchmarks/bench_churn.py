"""Benchmark the churn loop (not a test): the highest open-close rate one client process
reaches with the agent (Python, agents/churn.py) against the same loop in C
(benchmarks/churn/churn_loop.c), side by side in one run, in the same image, against the
same server, alternating rounds so that both see the same machine load.

The C program is compiled on the host (gcc -static) and mounted read-only into the
containers: no registry, nothing added to the image. The server is the C epoll loop, so
that it is not what bounds the client; the closer is the server, so that no port pool runs
out. CPU time (user, sys) per connection says what bounds each loop.

    python benchmarks/bench_churn.py [--rounds 3] [--seconds 5] [--out benchmarks/results/churn.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import docker

from tcplimits import LABEL, RUN_LABEL, results
from tcplimits.image import ensure_image

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "churn" / "churn_loop.c"
AGENTS = "/opt/tcplimits/agents"
PORT = 5000
HARDENED = dict(cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                user="65534:65534", detach=True)

PYTHON_LOOP = """
import json, resource, sys
sys.path.insert(0, %r)
import churn
churn.churn_loop((sys.argv[1], %d), client=1, proc=1, rate=None, duration=float(sys.argv[2]),
                 closer=sys.argv[3], connect_timeout=3.0)
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"event": "rusage", "user_s": ru.ru_utime, "sys_s": ru.ru_stime}))
""" % (AGENTS, PORT)


def build(workdir: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise SystemExit("bench_churn: needs a C compiler on the host (apt-get install gcc)")
    binary = workdir / "churn_loop"
    subprocess.run([gcc, "-O2", "-static", "-o", str(binary), str(SOURCE)], check=True)
    binary.chmod(0o755)
    return binary


def lines(container) -> list[dict]:
    return [json.loads(l) for l in container.logs(stdout=True, stderr=False).decode().splitlines()
            if l.startswith("{")]


def one(client, image: str, network: str, labels: dict, bindir: Path, server_ip: str,
        impl: str, seconds: float, closer: str) -> dict:
    if impl == "c":
        command = ["/bench/churn_loop", "client", server_ip, str(PORT), str(seconds), closer[0]]
    else:
        command = ["python3", "-c", PYTHON_LOOP, server_ip, str(seconds), closer]
    container = client.containers.run(
        image, command, network=network, labels=labels,
        volumes={str(bindir): {"bind": "/bench", "mode": "ro"}},
        sysctls={"net.ipv4.ip_local_port_range": "40000 40999"}, **HARDENED)
    try:
        container.wait(timeout=seconds + 60)
        events = lines(container)
    finally:
        container.remove(force=True)
    result = next(e for e in events if e["event"] == "result")
    usage = next((e for e in events if e["event"] == "rusage"), result)
    n = result["connections"]
    return {"impl": impl, "connections": n, "error": result.get("error") or result.get("errno"),
            "elapsed_s": result["elapsed_s"], "rate": n / result["elapsed_s"],
            "user_us_per_conn": 1e6 * usage["user_s"] / max(n, 1),
            "sys_us_per_conn": 1e6 * usage["sys_s"] / max(n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default=str(HERE / "results" / "churn.json"))
    args = parser.parse_args()
    client = docker.from_env()
    image = ensure_image(client).tags[0]
    run = f"bench-churn-{uuid.uuid4().hex[:6]}"
    labels = {LABEL: "1", RUN_LABEL: run}
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp)
        bindir.chmod(0o755)
        build(bindir)
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
            rows = []
            for r in range(args.rounds):
                for impl in ("python", "c"):
                    row = one(client, image, run, labels, bindir, server_ip, impl,
                              args.seconds, "server")
                    row["round"] = r + 1
                    rows.append(row)
                    print(f"round {r + 1} {impl:>6}: {row['rate']:8,.0f} conn/s  "
                          f"user {row['user_us_per_conn']:5.1f} us  sys "
                          f"{row['sys_us_per_conn']:5.1f} us per connection", flush=True)
        finally:
            if server is not None:
                server.remove(force=True)
            network.remove()
    med = {impl: statistics.median(r["rate"] for r in rows if r["impl"] == impl)
           for impl in ("python", "c")}
    ratios = [p["rate"] / c["rate"] for p, c in zip(rows[0::2], rows[1::2])]
    summary = {
        "image": image, "seconds": args.seconds, "rounds": rows,
        "median_rate": med, "python_over_c_per_round": ratios,
        "python_over_c": statistics.median(ratios),
        "cpu_us_per_conn": {impl: {k: statistics.median(r[k] for r in rows if r["impl"] == impl)
                                   for k in ("user_us_per_conn", "sys_us_per_conn")}
                            for impl in ("python", "c")},
    }
    results.write_json(summary, args.out)
    print(f"python / c = {summary['python_over_c']:.2f} (median of per-round ratios); "
          f"median rates: python {med['python']:,.0f}/s, c {med['c']:,.0f}/s; written to {args.out}")


if __name__ == "__main__":
    main()
