"""Benchmark (not a test): the 10,000-port exhaustion of bench_repeat.py done by the C connect
loop instead of the Python agent, over the same path: a client container on a fresh internal
bridge network, connecting to the server agent in its own container, new containers and
network for every repetition, as a sweep's points get them. Its spread says how much of the
agent's run-to-run variation the path itself (bridge, two namespaces, netfilter, cgroups)
brings, whatever the language of the loop.

The C program (benchmarks/c/connect_loop.c) is compiled static on the host and mounted
read-only into the client container, which runs it with the SDK's exec; the server is the
server agent with one worker and backlog 4096. Everything carries the tcplimits labels and
the agents' hardening, and is removed after each repetition.

    python benchmarks/bench_bridge_c.py [--repeat 5] [--out benchmarks/results/bridge-c.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from pathlib import Path

import docker
from docker.types import Ulimit

import cbuild

from tcplimits import LABEL, RUN_LABEL, results
from tcplimits.engine.plan import AGENTS, SERVER_PORT, hardening
from tcplimits.image import ensure_image

HERE = Path(__file__).parent
PORT_RANGE = "40000 49999"


def one(client, image: str, bindir: Path) -> dict:
    run = f"bench-bridge-c-{uuid.uuid4().hex[:6]}"
    labels = {LABEL: "1", RUN_LABEL: run}
    network = client.networks.create(run, driver="bridge", internal=True, labels=labels)
    made = []
    try:
        server = client.containers.run(
            image, ["python3", f"{AGENTS}/server.py", "--port", str(SERVER_PORT),
                    "--workers", "1", "--backlog", "4096"],
            name=f"{run}-server", network=run, labels=labels, detach=True,
            ulimits=[Ulimit(name="nofile", soft=20000, hard=20000)], **hardening())
        made.append(server)
        loop = client.containers.run(
            image, ["sleep", "600"], name=f"{run}-client", network=run, labels=labels,
            detach=True, sysctls={"net.ipv4.ip_local_port_range": PORT_RANGE},
            ulimits=[Ulimit(name="nofile", soft=15000, hard=15000)],
            volumes={str(bindir): {"bind": "/bench", "mode": "ro"}}, **hardening())
        made.append(loop)
        cbuild.wait_logged(server, b'"listening"', 30, "bench_bridge_c: the server agent")
        server.reload()
        address = server.attrs["NetworkSettings"]["Networks"][run]["IPAddress"]
        code, out = loop.exec_run(["/bench/connect_loop", address])
        words = out.decode().split()
        if code != 0 or len(words) < 3:
            raise SystemExit(f"bench_bridge_c: the loop failed: {out.decode()[-500:]}")
        return {"connections": int(words[0]), "exhaust_s": float(words[1]), "error": words[2]}
    finally:
        for container in made:
            container.remove(force=True)
        network.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "bridge-c.json"))
    args = parser.parse_args()
    client = docker.from_env()
    image = ensure_image(client).tags[0]
    rows, warmup = [], []
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp)
        cbuild.require(cbuild.compile_static("c/connect_loop.c", bindir), "bench_bridge_c")
        for i in range(1 - args.warmup, args.repeat + 1):
            row = one(client, image, bindir)
            (rows if i > 0 else warmup).append(row)
            print(f"{'repetition' if i > 0 else 'warm-up'} {max(i, 1 - i)}: {row}", flush=True)
    times = [r["exhaust_s"] for r in rows]
    spread = (max(times) - min(times)) / statistics.median(times)
    results.write_json({"warmup": warmup, "runs": rows,
                        "summary": {"exhaust_s": {"values": times,
                                                  "median": statistics.median(times),
                                                  "spread": spread}}}, Path(args.out))
    print("exhaust_s " + " ".join(f"{t:6.2f}" for t in times)
          + f"   median {statistics.median(times):.2f}, spread {100 * spread:.1f}%")


if __name__ == "__main__":
    main()
