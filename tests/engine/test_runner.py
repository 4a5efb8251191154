"""Real experiments on the Docker engine: the seed's figure and every limit's errno."""

import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from tcplimits import ROLE_LABEL, RUN_LABEL, results
from tcplimits.engine import probe_engine
from tcplimits.engine.plan import server_cpu_shares
from tests.engine.helpers import labelled, run_ok, unique_id

pytestmark = pytest.mark.docker

# Docker's embedded DNS listens on 127.0.0.11 inside each container on a user-defined network,
# on a port bound from the ephemeral range: that port is one connection fewer when in range.


def run(engine, tmp_path, name, **values):
    values.setdefault("quiet_host_timeout", 5)  # a shared engine is seldom quiet: mark, don't wait
    record = run_ok(engine, tmp_path / name, **values)
    clients = pl.read_parquet(tmp_path / name / results.CLIENTS_FILE)
    server = pl.read_parquet(tmp_path / name / results.SERVER_FILE)
    return record, clients, server


def per_client(clients):
    return {row["client"]: row for row in clients.group_by("client").agg(
        pl.col("connections").sum(), pl.col("held_ports").first(),
        pl.col("error").unique()).iter_rows(named=True)}


def test_seed_default_range_binds_each_client_at_28232_minus_held(engine, tmp_path):
    if probe_engine(engine)["engine_nofile_cap"] < 15000:
        pytest.skip("this engine cannot give a container nofile 15,000")
    record, clients, server = run(engine, tmp_path, "seed", port_range="32768-60999",
                                  nofile=15000, procs=2, clients=2)
    for client, row in per_client(clients).items():
        assert row["connections"] == 28232 - row["held_ports"]
        assert "EADDRNOTAVAIL" in row["error"]
        held = record["held_ports"][str(client)]
        assert len(held) == row["held_ports"] and all(32768 <= p <= 60999 for p in held)
    assert record["prediction"]["limit"] == "ports"
    assert record["totals"]["connections"] == record["prediction"]["total"]
    # The facts the model explains from: held sockets with their owner, somaxconn, workers.
    facts = record["facts"]
    assert "notes" not in record and facts["somaxconn"] >= 128
    assert len(facts["server_workers"]) == record["resolved"]["server_workers"]
    assert record["resolved"]["server_cpu_shares"] == server_cpu_shares(2)
    for client, sockets in facts["held_sockets"].items():
        assert [s["port"] for s in sockets] == record["held_ports"][client]
        assert all(s["owner"] == "docker-dns" for s in sockets if s["addr"] == "127.0.0.11")
    from tcplimits.cli import summary

    text = summary(tmp_path / "seed")
    assert "model: each client's port pool" in text
    if any(facts["held_sockets"].values()):
        assert "note: client" in text and "Docker's embedded DNS resolver" in text
    assert server["accepted"].sum() == clients["connections"].sum()
    # The run directory is complete and self-describing.
    run_dir = tmp_path / "seed"
    assert {p.name for p in (run_dir / "logs").iterdir()} == {"server.log", "client1.log",
                                                               "client2.log"}
    assert "services" in (run_dir / "compose.yml").read_text()
    env = record["environment"]
    assert env["engine_nofile_cap"] >= 15000 and env["kernel"] and env["image_id"]
    series = pl.read_parquet(run_dir / results.SERIES_FILE)
    # At least one sample per 1% of each process's count.
    for (c, p), group in series.group_by(["client", "proc"]):
        total = clients.filter((pl.col("client") == c) & (pl.col("proc") == p))["connections"][0]
        assert group.height >= 100 and group["connections"].max() == total


def test_nofile_bound_run_stops_each_process_at_nofile_minus_3_with_emfile(engine, tmp_path):
    _, clients, _ = run(engine, tmp_path, "nofile", port_range="32768-60999", nofile=500,
                        procs=2, clients=1)
    assert clients["connections"].to_list() == [497, 497]
    assert clients["error"].to_list() == ["EMFILE", "EMFILE"]
    assert clients["errno"].to_list() == [24, 24]


def test_server_bound_run_times_out_after_accepted_plus_backlog(engine, tmp_path):
    record, clients, server = run(engine, tmp_path, "server", port_range="32768-60999",
                                  nofile=1000, clients=1, server_nofile=100, server_workers=1,
                                  backlog=8, connect_timeout=2.5)
    (worker,) = server.iter_rows(named=True)
    assert worker["error"] == "EMFILE" and worker["accepted"] == 100 - 4
    (client,) = clients.iter_rows(named=True)
    assert client["error"] == "ETIMEDOUT" and client["errno"] == 110
    # What the server accepted plus at most the accept queue (backlog + 1).
    assert worker["accepted"] < client["connections"] <= worker["accepted"] + 8 + 1
    assert client["elapsed_s"] < 30
    assert record["prediction"]["limit"] == "server"


def test_three_clients_each_get_the_whole_small_range(engine, tmp_path):
    _, clients, server = run(engine, tmp_path, "three", port_range="40000-40499", nofile=2000,
                             clients=3)
    rows = per_client(clients)
    assert sorted(rows) == [1, 2, 3]
    for row in rows.values():
        assert row["connections"] == 500 - row["held_ports"]
        assert row["error"] == ["EADDRNOTAVAIL"]
    assert len(set(clients["client_ip"])) == 3
    assert server["accepted"].sum() == clients["connections"].sum()


def test_unsupported_nofile_is_refused_and_recorded(engine, tmp_path):
    cap = probe_engine(engine)["engine_nofile_cap"]
    if cap >= 1_048_576:
        pytest.skip("this engine allows any nofile")
    # Other checkouts run containers meanwhile: count only this run's.
    run_id = f"big-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run([sys.executable, "-m", "tcplimits", "run", "--nofile", str(cap + 1),
                           "--run-id", run_id, "--out", str(tmp_path / "big")],
                          capture_output=True, text=True)
    assert proc.returncode == 3
    record = json.loads((tmp_path / "big" / "run.json").read_text())
    assert record["status"] == "unsupported"
    assert f"engine allows nofile up to {cap}; asked {cap + 1}; use more --procs" in record["reason"]
    assert record["params"]["nofile"] == cap + 1  # recorded as asked, never changed
    assert labelled(engine, run_id) == ([], [])


@pytest.mark.parametrize("args, flag", [
    (["--port-range", "60999-32768"], "--port-range"),
    (["--port-range", "80-2000"], "--port-range"),
    (["--port-range", "1024-70000"], "--port-range"),
    (["--port-range", "lots"], "--port-range"),
    (["--nofile", "0"], "--nofile"),
    (["--nofile", "ten"], "--nofile"),
    (["--clients", "0"], "--clients"),
    (["--procs", "-2"], "--procs"),
    (["--procs", "1.5"], "--procs"),
    # the 4-tuple's flags
    (["--server-ports", "0"], "--server-ports"),
    (["--server-ports", "65"], "--server-ports"),
    (["--server-addrs", "two"], "--server-addrs"),
    (["--server-addrs", "0"], "--server-addrs"),
    (["--client-addrs", "-1"], "--client-addrs"),
    (["--client-addrs", "1.5"], "--client-addrs"),
    (["--bind-mode", "listen"], "--bind-mode"),
    (["--bind-mode", "BIND_NO_PORT"], "--bind-mode"),
])
def test_bad_input_exits_2_naming_the_flag_before_any_container(engine, tmp_path, args, flag):
    # Other checkouts run containers meanwhile: count only this run's.
    run_id = unique_id("bad")
    proc = subprocess.run([sys.executable, "-m", "tcplimits", "run", *args, "--run-id", run_id,
                           "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and args[1] in lines[0]
    assert not (tmp_path / "bad").exists()
    assert labelled(engine, run_id) == ([], [])


def _start_and_wait_for_containers(engine, tmp_path, run_id):
    proc = subprocess.Popen([sys.executable, "-m", "tcplimits", "run", "--run-id", run_id,
                             "--port-range", "1024-65535", "--nofile", "15000", "--procs", "3",
                             "--out", str(tmp_path / run_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        clients = engine.containers.list(all=True, sparse=True, filters={"label": [
            f"{RUN_LABEL}={run_id}", f"{ROLE_LABEL}=client"]})
        if clients:
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run never started its containers")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_run_removes_everything(engine, tmp_path, signum):
    run_id = f"interrupt-{signum.name.lower()}"
    proc = _start_and_wait_for_containers(engine, tmp_path, run_id)
    time.sleep(1.0)
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert labelled(engine, run_id) == ([], [])


def test_killed_run_is_swept_by_the_next(engine, tmp_path):
    run_id = "killed"
    proc = _start_and_wait_for_containers(engine, tmp_path, run_id)
    proc.send_signal(signal.SIGKILL)  # no cleanup possible: the next run must sweep
    proc.wait()
    assert labelled(engine, run_id)[0], "expected leftovers after SIGKILL"
    run(engine, tmp_path, "after-kill", port_range="40000-40099", nofile=1000)
    assert labelled(engine, run_id) == ([], [])
