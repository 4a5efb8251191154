"""Measure churn through the NAT (not a test; issue 16): the open-close rate clients sustain
through the NAT router for each closer, over NAT pool sizes, rates, one and two clients,
tcp_tw_reuse 0/1 and timestamps, each beside the same point without the NAT where it says
something. Each case is one short real run (``tcplimits run --nat gateway --mode churn``);
cases of a set alternate so that they see the same moments of a machine shared with others.

Besides run.json's figures (connections, per-second rate and mean connect() time, the
router's /proc/net/stat/nf_conntrack counters), a thread reads the TCP counters
(/proc/<pid>/net/netstat and snmp: TcpExt PAWSActive, TWRecycled, TCPSynRetrans, ...) of the
server's and the first client's namespaces while the run goes (a local engine, as root):
they say what a SYN met on the way.

    python benchmarks/bench_nat_churn.py [--set NAME ...] [--repeat N] [--out FILE]

Writes benchmarks/results/nat-churn.json (runs of earlier invocations are kept: --fresh to
start over; --rejudge sets the recorded runs against the current model). Figures on a busy
shared 2-core host: rates are indicative, counts exact.

Measured here (kernel 6.18, 8 s per case, two passes, load 12-16): the server closing first
through 50, 100 and 200 NAT ports at 200/s asked made 150/158, 184/202 and 254/288
connections (1,600 without the NAT), two clients 301/411, 20/s and 50/s asked 131/144 and
264/201; the server's PAWSTimewait equalled the clients' SYN retransmissions in every run
(about half the SYNs once the pool had turned over). With the clients' timestamps 0 or 2:
1,591-1,600 of 1,600 (3,200 of 3,200 for two clients). The client closing first: 200/s held
through 50- and 100-port pools, 400/s for two clients (one SYN lost to an insert race per
run), 16,784 against 17,402 direct in 5 s at the loops' top speed. The model
(natchurn.churn_predict) holds all of them; the first pass set its share of 1 s waits.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path

import docker
import polars as pl

from tcplimits import CLIENT_LABEL, ROLE_LABEL, RUN_LABEL, results
from tcplimits.config.params import RunParams
from tcplimits.engine import run_experiment

HERE = Path(__file__).resolve().parent
BASE = {"mode": "churn", "port_range": "40000-41999", "nofile": 5000, "duration": 6,
        "quiet_host_timeout": 5}


def pool(n: int) -> str:
    return f"40000-{40000 + n - 1}"


def nat(n: int, **values) -> dict:
    return {"nat": "gateway", "nat_port_range": pool(n), **values}


# name -> the run's values over BASE
SETS: dict[str, dict[str, dict]] = {
    # server closes first: pool sizes, with and without the NAT
    "server-pool": {
        "server-direct-200": {"closer": "server", "rate": 200},
        "server-nat50-200": nat(50, closer="server", rate=200),
        "server-nat100-200": nat(100, closer="server", rate=200),
        "server-nat200-200": nat(200, closer="server", rate=200),
    },
    # server closes first: rates and clients
    "server-rate": {
        "server-nat100-20": nat(100, closer="server", rate=20),
        "server-nat100-50": nat(100, closer="server", rate=50),
        "server-nat100-max": nat(100, closer="server", rate="max"),
        "server-nat100-200-2c": nat(100, closer="server", rate=200, clients=2),
    },
    # server closes first: timestamps (the clients'; 2: no per-address random offset)
    "server-ts": {
        "server-nat100-200-ts0": nat(100, closer="server", rate=200, timestamps=0),
        "server-nat100-200-ts2": nat(100, closer="server", rate=200, timestamps=2),
        "server-nat100-200-2c-ts2": nat(100, closer="server", rate=200, clients=2,
                                        timestamps=2),
        "server-nat100-200-2c-ts0": nat(100, closer="server", rate=200, clients=2,
                                        timestamps=0),
    },
    # client closes first: pools, rates, reuse, clients
    "client": {
        "client-nat50-200-reuse1": nat(50, closer="client", rate=200, tw_reuse=1),
        "client-nat100-200-reuse0": nat(100, closer="client", rate=200, tw_reuse=0),
        "client-nat100-max-reuse1": nat(100, closer="client", rate="max", tw_reuse=1),
        "client-nat100-200-2c-reuse1": nat(100, closer="client", rate=200, clients=2,
                                           tw_reuse=1),
        "client-nat100-200-ts0": nat(100, closer="client", rate=200, tw_reuse=1,
                                     timestamps=0),
    },
    # client closes first as fast as the loops go: two clients, wide ranges, with and without
    # the NAT (what, if anything, the NAT costs at high rate: insert races)
    "client-max": {
        "client-direct-max-2c": {"closer": "client", "rate": "max", "clients": 2,
                                 "tw_reuse": 1, "port_range": "40000-49999"},
        "client-nat100-max-2c": nat(100, closer="client", rate="max", clients=2, tw_reuse=1,
                                    port_range="40000-49999"),
    },
}


class Counters:
    """The TCP counters of a run's server and client 1, read while the run goes: the first
    and the last reading per role (a container's /proc vanishes when it stops)."""

    def __init__(self, engine, run_id: str):
        self.engine, self.run_id = engine, run_id
        self.first: dict[str, dict] = {}
        self.last: dict[str, dict] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                found = self.engine.containers.list(
                    filters={"label": f"{RUN_LABEL}={self.run_id}"})
            except Exception:
                found = []
            for c in found:
                role = c.labels.get(ROLE_LABEL, "")
                if role == "client":
                    role += c.labels.get(CLIENT_LABEL, "")
                if role not in ("server", "client1", "client2", "router"):
                    continue
                try:
                    pid = self.engine.api.inspect_container(c.id)["State"]["Pid"]
                    got = read_tcp_counters(pid)
                except Exception:
                    continue
                if got:
                    self.first.setdefault(role, got)
                    self.last[role] = got
            self.stop.wait(0.5)

    def deltas(self) -> dict[str, dict[str, int]]:
        out = {}
        for role, last in self.last.items():
            first = self.first.get(role, {})
            out[role] = {k: v - first.get(k, 0) for k, v in last.items()
                         if v - first.get(k, 0)}
        return out


def read_tcp_counters(pid: int) -> dict[str, int]:
    """TcpExt and Tcp counters of a process's network namespace."""
    out: dict[str, int] = {}
    for name in ("netstat", "snmp"):
        lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()
        for head, values in zip(lines[::2], lines[1::2]):
            prefix, keys = head.split(":", 1)
            if prefix not in ("TcpExt", "Tcp"):
                continue
            for k, v in zip(keys.split(), values.split(":", 1)[1].split()):
                try:
                    out[f"{prefix}.{k}"] = int(v)
                except ValueError:
                    pass
    return out


def one(engine, name: str, values: dict, out: Path) -> dict:
    run_id = f"bench-natchurn-{name}-{uuid.uuid4().hex[:6]}"
    params = RunParams.from_mapping({**BASE, **values})
    watch = Counters(engine, run_id)
    watch.thread.start()
    t0 = time.monotonic()
    try:
        record = run_experiment(params, out / run_id, run_id=run_id, progress=False,
                                client=engine, log=lambda m: None)
    finally:
        watch.stop.set()
        watch.thread.join()
    took = time.monotonic() - t0
    clients = results.read_table(out / run_id, results.CLIENTS_FILE)
    churn = results.read_table(out / run_id, results.CHURN_FILE)
    seconds = churn.filter((pl.col("role") == "client") & pl.col("proc").is_not_null()).sort(
        "client", "proc", "t_s")
    server_tw = churn.filter(pl.col("role") == "server")["time_wait"].max()
    n = int(clients["connections"].sum() or 0)
    elapsed = float(clients["elapsed_s"].max() or 0)
    stall = float((seconds["opened"] * seconds["connect_latency_s"].fill_null(0)).sum() or 0)
    nat_block = record.get("nat") or {}
    counters = nat_block.get("counters") or {}

    def stat_delta(a: str, b: str) -> dict[str, int]:
        sa = (counters.get(a) or {}).get("stat") or {}
        sb = (counters.get(b) or {}).get("stat") or {}
        return {k: sb[k] - sa.get(k, 0) for k in sb if sb[k] - sa.get(k, 0)}

    return {
        "case": name, "run_id": run_id, "status": record["status"], "reason": record["reason"],
        "values": values, "run_s": round(took, 1),
        "connections": n, "elapsed_s": elapsed, "rate": round(n / elapsed, 1) if elapsed else 0,
        "errors": dict(clients.group_by("error").len().iter_rows()),
        "per_second": seconds["opened"].to_list(),
        "latency_ms": [None if v is None else round(v * 1000, 1)
                       for v in seconds["connect_latency_s"].to_list()],
        "connect_s_total": round(stall, 2),
        "server_time_wait_max": server_tw,
        "router_stat": stat_delta("before", "held"),
        "router_held_count": (counters.get("held") or {}).get("count"),
        "time_wait_timeout_s": (nat_block.get("router") or {}).get("time_wait_timeout_s"),
        "tcp": watch.deltas(),
        "churn_verdict": ((record.get("churn") or {}).get("verdict") or {}).get("sentence"),
        "nat_verdict": (nat_block.get("verdict") or {}).get("sentence"),
        "nat_agrees": (nat_block.get("verdict") or {}).get("agrees"),
        "nat_model": {k: (nat_block.get("churn_prediction") or {}).get(k) for k in (
            "limit", "rate", "low", "high", "connections", "connections_low",
            "connections_high")},
        "load": Path("/proc/loadavg").read_text().split()[:3],
    }


def judge(row: dict) -> dict | None:
    """The current model's prediction and verdict for a recorded NAT run (from its values and
    count; run.json's own verdict is that of the code that ran it). Rate max lacks the loop's
    speed here: the NAT's ceiling only."""
    from tcplimits.model import natrun

    values = row["values"]
    if values.get("nat") != "gateway" or row["status"] != "ok":
        return None
    params = RunParams.from_mapping({**BASE, **values})
    clients = [f"10.0.0.{i + 2}" for i in range(params.clients)]
    pred = natrun.churn_prediction(params, [0] * params.clients, clients, ["10.0.0.100"],
                                   ["10.0.0.50"], [5000])
    verdict = natrun.churn_verdict(params, pred, row["connections"],
                                   row["router_stat"].get("insert_failed", 0))
    return {"limit": pred.limit, "rate": pred.rate, "low": pred.low, "high": pred.high,
            "connections": pred.connections, "connections_low": pred.connections_low,
            "connections_high": pred.connections_high, "agrees": verdict["agrees"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", choices=sorted(SETS))
    ap.add_argument("--case", action="append", help="only these cases (by name)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "nat-churn.json")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--label", default="", help="a word kept with each run (e.g. validation)")
    ap.add_argument("--rejudge", action="store_true",
                    help="run nothing: set the recorded runs against the current model")
    args = ap.parse_args()
    engine = docker.from_env()
    cases = {k: v for s in (args.set or sorted(SETS)) for k, v in SETS[s].items()}
    if args.case:
        cases = {k: v for k, v in cases.items() if k in args.case}
    if args.duration:
        cases = {k: {**v, "duration": args.duration} for k, v in cases.items()}
    old = ({} if args.fresh or not args.out.exists()
           else json.loads(args.out.read_text()))
    runs = list(old.get("runs", []))
    if args.rejudge:
        for row in runs:
            row["model_now"] = judge(row)
        results.write_json({**old, "runs": runs}, args.out)
        for row in runs:
            now = row["model_now"] or {}
            print(row.get("label"), row["case"], row["connections"], now.get("connections_low"),
                  now.get("connections"), now.get("connections_high"), now.get("limit"),
                  now.get("agrees"))
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-natchurn-") as tmp:
        for rep in range(args.repeat):
            order = list(cases.items())
            if rep % 2:
                order.reverse()
            for name, values in order:
                row = {"label": args.label, "repeat": rep,
                       **one(engine, name, values, Path(tmp))}
                runs.append(row)
                print(json.dumps({k: row[k] for k in ("case", "status", "connections", "rate",
                                                      "nat_agrees", "nat_model",
                                                      "errors", "connect_s_total",
                                                      "server_time_wait_max", "router_stat",
                                                      "load")}), flush=True)
                tcp = row["tcp"]
                print("   paws:", (tcp.get("server") or {}).get("TcpExt.PAWSTimewait"),
                      "syn_retrans:", sum((tcp.get(c) or {}).get("TcpExt.TCPSynRetrans", 0)
                                          for c in ("client1", "client2")),
                      "per_second:", row["per_second"], flush=True)
    summary = {"base": BASE, "runs": runs,
               "note": "a busy shared 2-core host: rates indicative, counts exact"}
    results.write_json(summary, args.out)


if __name__ == "__main__":
    main()
