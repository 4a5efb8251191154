"""Mode churn on the real engine: TIME_WAIT, tcp_tw_reuse and who closes first, each with an
outcome the model states beforehand (1,000-port ranges, a few seconds each)."""

import json
import re
import subprocess
import sys

import polars as pl
import pytest

from tcplimits import results
from tests.engine.helpers import run_ok

pytestmark = pytest.mark.docker


def churn_run(engine, tmp_path, name, **values):
    record = run_ok(engine, tmp_path / name, **{"mode": "churn", "port_range": "40000-40999",
                                                 **values})
    run_dir = tmp_path / name
    clients = pl.read_parquet(run_dir / results.CLIENTS_FILE)
    series = pl.read_parquet(run_dir / results.CHURN_FILE)
    return record, clients, series


def peak(series, role):
    return series.filter((pl.col("role") == role) & pl.col("time_wait").is_not_null())[
        "time_wait"].max()


def test_client_closes_without_reuse_stops_with_eaddrnotavail_when_the_pool_is_in_time_wait(
        engine, tmp_path):
    # 400/s against a pool of ~1,000 ports held 60 s each: the model says stop after the
    # pool (minus ports held at start), at pool / 400 s, with EADDRNOTAVAIL.
    record, clients, series = churn_run(engine, tmp_path, "churn-tw", rate=400, duration=6,
                                        closer="client", tw_reuse=0)
    (row,) = clients.to_dicts()
    pred = record["churn"]["prediction"]
    assert pred["stops"] and pred["errno"] == "EADDRNOTAVAIL"
    assert pred["stop_after"] == [1000 - row["held_ports"]]
    assert row["error"] == "EADDRNOTAVAIL" and row["errno"] == 99
    assert abs(row["connections"] - pred["stop_after"][0]) <= 2
    assert row["elapsed_s"] == pytest.approx(pred["stop_at_s"][0], rel=0.1)
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]
    # every port the client used sits in TIME_WAIT on the client side, none on the server
    assert peak(series, "client") == row["connections"]
    assert peak(series, "server") == 0
    # the per-second rows add up to the total, and the failure is in the last one
    seconds = series.filter(pl.col("proc").is_not_null()).sort("t_s")
    assert seconds["opened"].sum() == row["connections"]
    assert seconds["error"][-1] == "EADDRNOTAVAIL"


def test_client_closes_with_reuse_does_not_stop(engine, tmp_path):
    # tcp_tw_reuse=1 frees a TIME_WAIT port after 1 s: 1,000 ports sustain 1,000/s; 200/s
    # runs through (200/s also stays light enough to hold its pace on a loaded host)
    record, clients, series = churn_run(engine, tmp_path, "churn-reuse", rate=200, duration=5,
                                        closer="client", tw_reuse=1)
    (row,) = clients.to_dicts()
    assert row["error"] == "DURATION" and row["errno"] is None
    assert 0.9 * 1000 <= row["connections"] <= 1001
    assert not record["churn"]["prediction"]["stops"]
    assert not record["churn"]["verdict"]["stopped"], record["churn"]["verdict"]["sentence"]
    # the ports cycle through TIME_WAIT; at 200/s one parity of the range is enough (a loop
    # that catches up after a stall may touch the other parity too, never more than the pool;
    # the once-a-second sample can miss the last few tens when the loop stalls on a busy host)
    predicted = record["churn"]["prediction"]["client_time_wait"][0]
    assert predicted == 500 and 0.9 * predicted <= peak(series, "client") <= 1000
    assert peak(series, "server") == 0


def test_server_closes_leaves_time_wait_on_the_server_and_the_client_does_not_stop(
        engine, tmp_path):
    record, clients, series = churn_run(engine, tmp_path, "churn-server", rate="max",
                                        duration=4, closer="server", tw_reuse=0)
    (row,) = clients.to_dicts()
    assert row["error"] == "DURATION"
    assert row["connections"] > 2000  # twice the port range: the ports came back at once
    assert record["totals"]["server_accepted"] == row["connections"]
    assert peak(series, "client") == 0
    # one TIME_WAIT socket per 4-tuple on the server; connect() prefers one parity of the
    # range, so about half of it (the model's figure)
    predicted = record["churn"]["prediction"]["server_time_wait"]
    assert 0.9 * predicted <= peak(series, "server") <= 1000
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]


def test_a_short_reuse_delay_lets_the_unpaced_loop_run_and_timestamps_off_disable_reuse(
        engine, tmp_path):
    # tcp_tw_reuse_delay 50 ms: 1,000 ports sustain 20,000/s, beyond one process's loop
    record, clients, _ = churn_run(engine, tmp_path, "churn-delay", rate="max", duration=3,
                                   closer="client", tw_reuse=1, tw_reuse_delay=50)
    (row,) = clients.to_dicts()
    assert row["error"] == "DURATION" and row["connections"] > 3000
    assert record["churn"]["prediction"]["sustainable_rate"] == [pytest.approx(
        (1000 - row["held_ports"]) / 0.05)]
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]
    # without TCP timestamps tcp_tw_reuse cannot tell old segments apart: no reuse, so
    # 400/s stops after the pool, as with tw_reuse 0
    record, clients, _ = churn_run(engine, tmp_path, "churn-nots", rate=400, duration=5,
                                   closer="client", tw_reuse=1, timestamps=0)
    (row,) = clients.to_dicts()
    assert row["error"] == "EADDRNOTAVAIL" and abs(row["connections"] - (1000 - row["held_ports"])) <= 2
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]


# --- churn over the 4-tuple: which members multiply the sustainable rate, by bind mode


def per_pair(run_dir):
    return pl.read_parquet(run_dir / results.DESTINATIONS_FILE)


def stopped_as_predicted(record, clients, errno):
    """The one client process stopped with ``errno`` within 3 of the model's count, and the
    verdict agrees; returns (its row, the prediction)."""
    (row,) = clients.to_dicts()
    pred = record["churn"]["prediction"]
    assert pred["errno"] == errno and row["error"] == errno
    assert abs(row["connections"] - pred["stop_after"][0]) <= 3
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]
    return row, pred


def test_more_server_ports_multiply_the_pool_of_a_client_that_closes_first(engine, tmp_path):
    # plain connect() picks a port per 4-tuple: 2 server ports are 2 pools of ~1,000, so
    # 800/s stops after ~2,000 connections (not 1,000), spread evenly, with EADDRNOTAVAIL
    record, clients, _ = churn_run(engine, tmp_path, "churn-ports", rate=800, duration=6,
                                   closer="client", tw_reuse=0, server_ports=2)
    row, pred = stopped_as_predicted(record, clients, "EADDRNOTAVAIL")
    assert pred["stop_after"] == [2 * (1000 - row["held_ports"])]
    pairs = per_pair(tmp_path / "churn-ports").sort("server_port")
    assert pairs["server_port"].to_list() == [5000, 5001]
    assert abs(pairs["connections"][0] - pairs["connections"][1]) <= 1  # round-robin


def test_bind_keeps_one_pool_per_source_and_tw_reuse_does_not_help_it(engine, tmp_path):
    # bind((addr, 0)) picks the port before the destination is known and never takes one a
    # TIME_WAIT socket holds: 2 server ports and tcp_tw_reuse=1 change nothing, the client
    # stops after ~1,000 with EADDRINUSE at bind(). The same point with bind-no-port reuses.
    record, clients, _ = churn_run(engine, tmp_path, "churn-bind", rate=400, duration=6,
                                   closer="client", tw_reuse=1, server_ports=2,
                                   bind_mode="bind")
    row, pred = stopped_as_predicted(record, clients, "EADDRINUSE")
    assert not pred["reuse"] and 950 <= row["connections"] <= 1000
    record, clients, _ = churn_run(engine, tmp_path, "churn-bnp", rate=400, duration=4,
                                   closer="client", tw_reuse=1, server_ports=2,
                                   bind_mode="bind-no-port")
    (row,) = clients.to_dicts()
    assert record["churn"]["prediction"]["reuse"]
    assert row["error"] == "DURATION" and row["connections"] >= 0.9 * 400 * 4
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]


def test_source_addresses_multiply_the_pool_with_bind_no_port(engine, tmp_path):
    # two source addresses x one destination: two pools of ~1,000 (the helper adds the
    # second address); 800/s without reuse stops after ~2,000, half from each source
    record, clients, _ = churn_run(engine, tmp_path, "churn-sources", rate=800, duration=6,
                                   closer="client", tw_reuse=0, client_addrs=2,
                                   bind_mode="bind-no-port")
    row, pred = stopped_as_predicted(record, clients, "EADDRNOTAVAIL")
    assert pred["stop_after"] == [2 * (1000 - row["held_ports"])]
    pairs = per_pair(tmp_path / "churn-sources")
    assert pairs["source"].n_unique() == 2


# --- churn on network loopback: one shared namespace, tcp_tw_reuse=2 applies


def test_on_loopback_the_default_tw_reuse_reuses_and_only_the_closer_keeps_time_wait(
        engine, tmp_path):
    # tcp_tw_reuse=2 (the kernel's default) reuses toward loopback addresses: 400/s on 1,000
    # ports runs through where the bridge stops after 1,000; one parity of the range suffices
    record, clients, series = churn_run(engine, tmp_path, "churn-lo", rate=400, duration=4,
                                        closer="client", network="loopback")
    (row,) = clients.to_dicts()
    assert record["churn"]["prediction"]["reuse"] and row["error"] == "DURATION"
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]
    tw = series.filter(pl.col("time_wait").is_not_null())
    # the namespace's count, once, as the closer's (all clients together)
    assert set(tw["role"]) == {"client"} and tw["client"].is_null().all()
    assert 0.9 * 500 <= peak(series, "client") <= 1000
    # tcp_tw_reuse=0: both clients stop after their own destination's 1,000 ports
    record, clients, _ = churn_run(engine, tmp_path, "churn-lo0", rate=400, duration=5,
                                   closer="client", network="loopback", tw_reuse=0, clients=2)
    assert clients["error"].to_list() == ["EADDRNOTAVAIL"] * 2
    for got, want in zip(clients["connections"], record["churn"]["prediction"]["stop_after"]):
        assert abs(got - want) <= 2
    assert record["churn"]["verdict"]["agrees"], record["churn"]["verdict"]["sentence"]


def test_cli_churn_run_says_what_happened_and_counts_time_wait_live(tmp_path):
    # the issue's own command, shortened: the client stops within a second, the run lasts
    # its duration, and the log shows the TIME_WAIT count meanwhile
    out = tmp_path / "churn-demo"
    proc = subprocess.run([sys.executable, "-m", "tcplimits", "run", "--mode", "churn",
                           "--port-range", "40000-40999", "--rate", "max", "--duration", "12",
                           "--closer", "client", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    live = [line for line in proc.stderr.splitlines() if line.startswith("connections ")]
    assert live and live[-1].endswith("processes stopped 1/1"), live
    waiting = [re.fullmatch(r"every client process stopped; (\d+) of 12 s: TIME_WAIT clients "
                            r"([\d,]+), server 0", line)
               for line in proc.stderr.splitlines() if line.startswith("every client")]
    assert waiting and all(waiting), proc.stderr
    assert max(int(m[2].replace(",", "")) for m in waiting) >= 900  # the client's ports
    assert "churn model: as predicted: stopped with EADDRNOTAVAIL" in proc.stdout, proc.stdout
    assert "reached (rate max)" in proc.stdout
    assert json.loads((out / results.RUN_JSON).read_text())["duration_s"] >= 12
