"""Where the agents' CPU per connection goes (not a test, issue 22): one client process
connecting N times to one accept worker over loopback, in a network namespace of its own (no
Docker, no engine, no log streams), each side either the C pair's (benchmarks/c/hold_pair.c)
or an agent, so that each agent side is measured against the same C peer:

    c/c          the C pair: what the kernel costs
    X/c          client agent X against the C server: X's client CPU per connection
    c/X          C client against server agent X: X's server CPU per connection
    X/X          both agents

X is "libc" (the agents as they are, hold loops through libc), "socket" (the same agents with
TCPLIMITS_AGENT_SYSCALLS=socket: the socket module's path), and "before" (the agents of a git
revision, --before, main by default). Pairings alternate within each round, so that every
one sees the same moments of a shared machine.

    python benchmarks/bench_agent_loop.py                   # 12,500 connections, 5 rounds
    python benchmarks/bench_agent_loop.py --impls libc,before --rounds 9

Per pairing: seconds from the first connect() to the last, the rate, and each side's CPU per
connection over that phase: run time from /proc/<pid>/schedstat (ns) of the client's
connecting process and of the accept worker, with its user and system parts (/proc/<pid>/stat,
clock ticks); for the C client, its own getrusage(). Needs root (unshare --net) and gcc.
Prints a table of medians and writes benchmarks/results/agent_loop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbuild

HERE = Path(__file__).resolve().parent
AGENTS = HERE.parent / "src" / "tcplimits" / "agents"
SERVER_ADDR, PORT = "127.1.0.1", 5000  # hold_pair's first destination with DESTS 1
NOFILE = 20_000  # the engine's cap per container; N stays under it


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(v) for v in text.split()]


def cpu(pid: int) -> dict:
    """On-CPU ns (schedstat) and user / system ticks of one process."""
    run_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"ns": run_ns, "user": int(fields[11]), "system": int(fields[12])}


def per_connection(now: dict, before: dict, n: int) -> dict:
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    return {"cpu_us": round((now["ns"] - before["ns"]) / 1e3 / n, 2),
            "user_us": round((now["user"] - before["user"]) * tick / n, 2),
            "system_us": round((now["system"] - before["system"]) * tick / n, 2)}


def lines_until(proc: subprocess.Popen, want, deadline_s: float = 60) -> dict | str:
    """Read ``proc``'s stdout until a line ``want`` accepts; that line (parsed if JSON)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench_agent_loop: {proc.args[:3]} ended: {proc.stderr.read()}")
        item = json.loads(line) if line.startswith("{") else line.strip()
        if want(item):
            return item
    raise SystemExit(f"bench_agent_loop: {proc.args[:3]} said nothing in {deadline_s} s")


def agent_env(impl: str) -> dict:
    env = dict(os.environ)
    env.pop("TCPLIMITS_AGENT_SYSCALLS", None)
    if impl == "socket":
        env["TCPLIMITS_AGENT_SYSCALLS"] = "socket"
    return env


def start(command: list[str], env: dict | None = None) -> subprocess.Popen:
    def limits() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=limits)


def inside(client: str, server: str, n: int, hold_pair: str, dirs: dict) -> dict:
    """One pairing, in this (fresh) network namespace."""
    try:  # a fresh namespace's lo is down; a container's is up (and it may have no `ip`)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)
    except FileNotFoundError:
        pass
    py = sys.executable
    if server == "c":
        srv = start([hold_pair, "server", "1"])
        lines_until(srv, lambda x: x == "listening")
    else:
        srv = start([py, str(dirs[server] / "server.py"), "--port", str(PORT), "--workers", "1"],
                    agent_env(server))
        lines_until(srv, lambda x: isinstance(x, dict) and x.get("event") == "listening")
    (worker,) = children(srv.pid)
    worker_before = cpu(worker)
    out: dict = {"client": client, "server": server}
    try:
        if client == "c":
            cli = start([hold_pair, "client", str(n), "1", "1", "1", "shared"])
            words = lines_until(cli, lambda x: isinstance(x, str) and len(x.split()) >= 5).split()
            server_now = cpu(worker)
            held, seconds, client_cpu_s = int(words[0]), float(words[1]), float(words[2])
            out["client_side"] = {"cpu_us": round(client_cpu_s * 1e6 / held, 2)}
            cli.wait(timeout=30)
        else:
            cli = start([py, str(dirs[client] / "client.py"), "--server", SERVER_ADDR, "--port",
                         str(PORT), "--procs", "1", "--max-connections", str(n),
                         "--sample-every", str(max(1, n // 200)), "--settle", "0",
                         "--wait-signal", "--check-signal"], agent_env(client))
            lines_until(cli, lambda x: isinstance(x, dict) and x.get("event") == "ready")
            (proc,) = children(cli.pid)  # forked before "ready"
            proc_before = cpu(proc)
            cli.send_signal(signal.SIGUSR1)
            last = None
            while True:
                item = lines_until(cli, lambda x: isinstance(x, dict))
                if item.get("event") == "progress":
                    last = item
                if item.get("event") == "connected":
                    break
            proc_now = cpu(proc)
            time.sleep(0.2)  # the worker accepts what is still queued
            server_now = cpu(worker)
            held, seconds = item["opened"], last["t_s"]
            out["client_side"] = per_connection(proc_now, proc_before, held)
            cli.send_signal(signal.SIGUSR2)
            result = lines_until(cli, lambda x: isinstance(x, dict) and x.get("event") == "result")
            out["held"] = result["connections"]
            cli.send_signal(signal.SIGTERM)
            cli.wait(timeout=60)
        out["server_side"] = per_connection(server_now, worker_before, held)
        out.update(connections=held, seconds=round(seconds, 4), rate=round(held / seconds))
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)
    return out


def checkout(ref: str, into: Path) -> Path:
    """The agents of git revision ``ref``, written into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    repo = HERE.parent
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", ref,
                            "src/tcplimits/agents/"], check=True, capture_output=True,
                           text=True).stdout.split()
    for name in names:
        blob = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{name}"], check=True,
                              capture_output=True).stdout
        (into / Path(name).name).write_bytes(blob)
    return into


def median(rows: list[dict], key) -> float | None:
    values = [key(r) for r in rows]
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=12_500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--impls", default="libc,socket,before",
                        help="agent variants, comma-separated: libc, socket, before")
    parser.add_argument("--before", default="main", help="git revision of 'before'")
    parser.add_argument("--out", default=str(HERE / "results" / "agent_loop.json"))
    parser.add_argument("--inside", nargs=5, metavar=("CLIENT", "SERVER", "N", "BIN", "DIRS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        client, server, n, binary, dirs = args.inside
        found = inside(client, server, int(n), binary,
                       {k: Path(v) for k, v in json.loads(dirs).items()})
        print(json.dumps(found))
        return 0
    impls = [v for v in args.impls.split(",") if v]
    pairings = [("c", "c")] + [(x, "c") for x in impls] + [("c", x) for x in impls] \
        + [(x, x) for x in impls]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = cbuild.require(cbuild.compile_static("c/hold_pair.c", Path(tmp)),
                                "bench_agent_loop")
        dirs = {"libc": str(AGENTS), "socket": str(AGENTS)}
        if "before" in impls:
            dirs["before"] = str(checkout(args.before, Path(tmp) / "before"))
        for r in range(1, args.rounds + 1):
            for client, server in pairings:
                done = subprocess.run(
                    ["unshare", "--net", "--", sys.executable, __file__, "--inside", client,
                     server, str(args.connections), str(binary), json.dumps(dirs)],
                    capture_output=True, text=True, timeout=600, check=False,
                    env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
                if done.returncode:
                    raise SystemExit(f"bench_agent_loop: {client}/{server}: {done.stderr}")
                time.sleep(0.5)  # the namespace's sockets go with it, in the background
                row = {"round": r, **json.loads(done.stdout.splitlines()[-1])}
                rows.append(row)
                print(f"round {r} {client:>6}/{server:<6} {row['rate']:>7,}/s  client "
                      f"{row['client_side']}  server {row['server_side']}", flush=True)
    summary = {}
    for client, server in pairings:
        mine = [r for r in rows if (r["client"], r["server"]) == (client, server)]
        summary[f"{client}/{server}"] = {
            "rate": median(mine, lambda r: r["rate"]),
            **{f"{side}_{part}": median(mine, lambda r, s=side, p=part: r[f"{s}_side"].get(p))
               for side in ("client", "server") for part in ("cpu_us", "user_us", "system_us")}}
    loads = Path("/proc/loadavg").read_text().split()[:3]
    from tcplimits import results

    results.write_json({"connections": args.connections, "rounds": rows, "summary": summary,
                        "before": args.before, "loadavg_end": loads}, Path(args.out))
    print(f"\nmedians over {args.rounds} rounds, {args.connections:,} connections, load "
          f"{' '.join(loads)} (us per connection)")
    for name, s in summary.items():
        print(f"{name:>14}: {s['rate']:>9,}/s  client {s['client_cpu_us']} "
              f"(user {s['client_user_us']}, sys {s['client_system_us']})  server "
              f"{s['server_cpu_us']} (user {s['server_user_us']}, sys {s['server_system_us']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
