"""Run directories -> the four dataset files."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tcplimits.results import dataset
from tcplimits import results
from tcplimits.cli import main
from tcplimits.config.params import FIELDS, RunParams
from tests.results.rundirs import write_ok_run, write_unsupported_run


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    a = RunParams(port_range="40000-40999", clients=2)
    b = RunParams(port_range="40000-44999", nofile=500, procs=2)
    c = RunParams(nofile=30000, server_workers=3)
    dirs = [tmp_path / "runs" / name for name in ("a", "b", "c")]
    write_ok_run(dirs[0], "a", a, held=[[40123], []], per_proc=[999, 1000],
                 error="EADDRNOTAVAIL")
    write_ok_run(dirs[1], "b", b, held=[[]], per_proc=[497], error="EMFILE")
    write_unsupported_run(dirs[2], "c", c)
    return dirs


def test_runs_table(runs, tmp_path):
    counts = dataset.build_dataset(runs, tmp_path / "ds")
    assert counts == {"runs": 3, "clients": 2 + 2, "server": 2, "series": 4, "destinations": 0,
                      "churn": 0, "realserver": 0}
    df = pl.read_parquet(tmp_path / "ds" / "runs.parquet")
    assert list(df.columns[: len(dataset.RUNS_SCHEMA)]) == list(dataset.RUNS_SCHEMA)
    assert dict(df.schema).items() >= dataset.RUNS_SCHEMA.items()
    for name in FIELDS:
        assert name in df.columns
    a, b, c = df.sort("run_id").iter_rows(named=True)
    assert (a["status"], a["reason"], a["port_lo"], a["port_hi"], a["port_count"]) == \
        ("ok", None, 40000, 40999, 1000)
    assert a["held_ports"] == [1, 0]
    assert a["predicted_per_client"] == [999, 1000] and a["predicted_total"] == 1999
    assert a["predicted_limit"] == "ports" and a["predicted_errno"] == "EADDRNOTAVAIL"
    assert a["connections_total"] == 1999 and a["server_accepted"] == 1999
    assert a["resolved_server_nofile"] == 20000 and a["resolved_server_workers"] == 1
    assert a["server_workers"] == "auto" and a["server_nofile"] is None
    assert a["somaxconn"] == 4096
    assert json.loads(a["held_sockets"]) == {"1": [{"addr": "127.0.0.11", "port": 40123,
                                                    "state": "LISTEN", "owner": "docker-dns"}],
                                             "2": []}
    assert a["started_at"].year == 2026 and a["ended_at"].second == 15
    assert a["duration_s"] == 10.0 and a["connect_s"] == 1.5
    assert a["env_kernel"] == "6.18.0" and a["env_engine_nofile_cap"] == 20000
    assert a["env_cgroup_version"] == "2" and a["env_git_sha"] is None
    assert a["run_dir"] == str(runs[0])
    assert b["predicted_limit"] == "descriptors" and b["predicted_total"] == 2 * 497
    # unsupported: in the table with its reason, nulls for what it never reached
    assert c["status"] == "unsupported" and "nofile" in c["reason"]
    assert c["server_workers"] == "3" and c["nofile"] == 30000
    assert c["predicted_total"] is None and c["connections_total"] is None
    assert c["held_ports"] is None and c["held_sockets"] is None and c["ended_at"] is None
    assert c["somaxconn"] is None
    assert c["env_future_key"] == '{"a": 1}'  # an environment key added later


def test_tables_carry_the_parameters(runs, tmp_path):
    dataset.build_dataset(runs, tmp_path / "ds")
    clients = pl.read_parquet(tmp_path / "ds" / "clients.parquet")
    assert list(clients.columns) == list(dataset.CLIENTS_SCHEMA)
    assert dict(clients.schema) == dataset.CLIENTS_SCHEMA
    a = clients.filter(pl.col("run_id") == "a").sort("client")
    assert a["connections"].to_list() == [999, 1000]
    assert a["held_ports"].to_list() == [1, 0]  # the clients table keeps its per-row count
    assert set(a["port_count"]) == {1000} and set(a["clients"]) == {2}
    assert set(a["resolved_server_nofile"]) == {20000}
    b = clients.filter(pl.col("run_id") == "b")
    assert b["nofile"].to_list() == [500, 500] and b["procs"].to_list() == [2, 2]
    for name in ("server", "series"):
        df = pl.read_parquet(tmp_path / "ds" / f"{name}.parquet")
        assert dict(df.schema) == dict(dataset.TABLES[name][1])
        assert set(df["run_id"]) == {"a", "b"}
        assert df["port_range"].null_count() == 0


def test_empty_inputs_give_empty_files_with_the_schema(tmp_path):
    counts = dataset.build_dataset([], tmp_path / "ds")
    assert counts == {"runs": 0, "clients": 0, "server": 0, "series": 0, "destinations": 0,
                      "churn": 0, "realserver": 0}
    assert dict(pl.read_parquet(tmp_path / "ds" / "runs.parquet").schema) == dataset.RUNS_SCHEMA
    for name, (_, schema) in dataset.TABLES.items():
        assert dict(pl.read_parquet(tmp_path / "ds" / f"{name}.parquet").schema) == schema


def test_a_run_without_tables_or_run_json(tmp_path, runs):
    (runs[0] / results.SERIES_FILE).unlink()  # absent table: no rows, no error
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    counts = dataset.build_dataset([*runs, broken], tmp_path / "ds")
    assert counts["series"] == 2
    df = pl.read_parquet(tmp_path / "ds" / "runs.parquet")
    row = df.filter(pl.col("run_id") == "broken").row(0, named=True)
    assert row["status"] == "failed" and "run.json" in row["reason"]


def test_duplicates(runs, tmp_path):
    # the same directory twice counts once
    assert dataset.build_dataset([runs[0], runs[0]], tmp_path / "ds")["runs"] == 1
    copy = tmp_path / "copy"
    write_ok_run(copy, "a", RunParams(), held=[[]], per_proc=[5], error="EADDRNOTAVAIL")
    heard = []
    dataset.build_dataset([runs[0], copy], tmp_path / "ds", report=heard.append)
    df = pl.read_parquet(tmp_path / "ds" / "runs.parquet")
    assert df["run_id"].to_list() == ["a", str(copy)]  # the copy is listed, not measured
    assert df["status"].to_list() == ["ok", "failed"]
    assert f"run id 'a' is also the id of {runs[0]}" in df["reason"][1]
    assert len(heard) == 1 and heard[0].startswith(f"{copy}: run id 'a'")
    clients = pl.read_parquet(tmp_path / "ds" / "clients.parquet")
    assert clients["connections"].to_list() == [999, 1000]  # a's rows, once


def test_rebuild_replaces_atomically(runs, tmp_path):
    out = tmp_path / "ds"
    dataset.build_dataset(runs, out)
    dataset.build_dataset(runs[:1], out)
    assert pl.read_parquet(out / "runs.parquet").height == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.parquet" for n in dataset.TABLE_NAMES)


def test_cli(runs, tmp_path, capsys):
    assert main(["dataset", *map(str, runs), "--out", str(tmp_path / "ds")]) == 0
    assert "runs: 3 rows" in capsys.readouterr().out


def test_host_state_and_noisy_columns():
    """run.json's host_tcp and noisy flag reach the runs table; an older record without them
    gives nulls, not an error."""
    state = {"inuse": 3, "orphan": 2500, "tw": 4, "alloc": 900, "mem": 80, "tw_all": 700,
             "conntrack": 1234, "source": "local /proc", "at": 1.0}
    record = {"run_id": "r", "status": "ok", "params": {}, "quiet_wait_s": 60.0, "noisy": True,
              "noisy_reason": "host not quiet after 60 s",
              "host_tcp": {"before": state, "at_connect": state, "after": {**state, "orphan": 9}}}
    row = dataset.run_row(record, Path("r"))
    assert (row["noisy"], row["noisy_reason"], row["quiet_wait_s"]) == \
        (True, "host not quiet after 60 s", 60.0)
    assert (row["host_orphan_at_connect"], row["host_tw_at_connect"],
            row["host_conntrack_at_connect"], row["host_orphan_after"]) == (2500, 700, 1234, 9)
    old = dataset.run_row({"run_id": "old", "status": "ok", "params": {}}, Path("old"))
    assert old["noisy"] is None and old["host_orphan_at_connect"] is None
