"""Partial and corrupt run directories, and failed runs: the dataset reports them, records
them as failed with the reason, never crashes, and never treats their counts as measurements."""

from __future__ import annotations

import json

import polars as pl

from tests.results.rundirs import write_ok_run
from tcplimits.report import charts
from tcplimits.results import dataset
from tcplimits import results
from tcplimits.cli import main
from tcplimits.config.params import RunParams


def _sweep(tmp_path):
    """One good run and one of each kind of damage."""
    root = tmp_path / "runs"
    params = RunParams(port_range="40000-40999")
    good, partial, unreadable, mixed, failed = (root / n for n in (
        "good", "partial", "unreadable", "mixed", "failed"))
    for run_dir in (good, partial, unreadable, mixed, failed):
        write_ok_run(run_dir, run_dir.name, params, held=[[]], per_proc=[1000],
                     error="EADDRNOTAVAIL")
    (partial / results.RUN_JSON).unlink()  # the run died before its last write
    (unreadable / results.CLIENTS_FILE).write_bytes(b"PAR1 this is not parquet")
    other = results.read_table(mixed, results.SERIES_FILE).with_columns(
        pl.lit("elsewhere").alias("run_id"))
    results.write_parquet(other, mixed / results.SERIES_FILE)  # copied from another run
    record = json.loads((failed / results.RUN_JSON).read_text())
    record.update(status="failed", reason="client1 container killed (SIGKILL, exit code 137)",
                  fault="container_exited",
                  totals={"connections": 321, "server_accepted": 300})
    results.write_json(record, failed / results.RUN_JSON)
    return [good, partial, unreadable, mixed, failed]


def test_damaged_run_directories_are_reported_and_recorded_as_failed(tmp_path, capsys):
    dirs = _sweep(tmp_path)
    assert main(["dataset", *map(str, dirs), "--out", str(tmp_path / "ds")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[1].strip() for line in err] == [str(d) for d in dirs[1:4]]
    assert all(line.endswith("; recorded as failed") for line in err)
    runs = {r["run_id"]: r for r in
            pl.read_parquet(tmp_path / "ds" / "runs.parquet").iter_rows(named=True)}
    assert runs["good"]["status"] == "ok" and runs["good"]["connections_total"] == 1000
    assert runs["partial"]["status"] == "failed"
    assert "no readable run.json" in runs["partial"]["reason"]
    assert ("partial run: clients.parquet, series.parquet, server.parquet without it"
            in runs["partial"]["reason"])
    assert runs["unreadable"]["status"] == "failed"
    assert "clients.parquet is unreadable" in runs["unreadable"]["reason"]
    assert runs["mixed"]["status"] == "failed"
    assert "series.parquet holds rows of run elsewhere, not of mixed" in runs["mixed"]["reason"]
    assert runs["mixed"]["port_range"] == "40000-40999"  # what it asked stays listed


def test_failed_runs_are_listed_never_measured(tmp_path):
    dirs = _sweep(tmp_path)
    dataset.build_dataset(dirs, tmp_path / "ds")
    runs = pl.read_parquet(tmp_path / "ds" / "runs.parquet")
    failed = runs.filter(pl.col("run_id") == "failed").row(0, named=True)
    assert failed["status"] == "failed" and "SIGKILL" in failed["reason"]
    assert failed["connections_total"] is None and failed["server_accepted"] is None
    for name in ("clients", "server", "series"):
        table = pl.read_parquet(tmp_path / "ds" / f"{name}.parquet")
        assert set(table["run_id"]) == {"good"}, name
    clients = pl.read_parquet(tmp_path / "ds" / "clients.parquet")
    drawn = json.dumps([charts.connections_vs_range(clients).to_dict(),
                        charts.server_vs_clients(runs).to_dict()])
    assert '"good"' in drawn
    assert not any(f'"{bad}"' in drawn for bad in ("failed", "partial", "unreadable", "mixed"))


def test_the_report_lists_damaged_and_failed_runs_with_their_reasons(tmp_path):
    """Every report section runs over a dataset holding them; only 'good' is compared."""
    from tcplimits.report import findings, render
    from tcplimits.report.sections.runset import unfinished_rows

    dataset.build_dataset(_sweep(tmp_path), tmp_path / "ds")
    d = findings.Data.of(render.load_dataset(tmp_path / "ds"))
    assert [c.run_id for c in d.comparisons] == ["good"]
    listed = {r["point"]: r["reason"] for r in unfinished_rows(d.runs).to_dicts()}
    assert sorted(listed) == ["failed", "mixed", "partial", "unreadable"]
    assert "SIGKILL" in listed["failed"] and "unreadable" in listed["unreadable"]
    for section in (findings.question, findings.environment, findings.seed,
                    findings.port_pool, findings.outcomes, findings.observed_vs_predicted,
                    findings.comparison_table, findings.latency, findings.server_side,
                    findings.unfinished, findings.rerun, findings.conclusion):
        section(d)  # none of them fails on a sweep with damaged runs


BAD_RECORDS = {  # what a hand edit or another version may leave in run.json
    "params-text": lambda r: r.update(params="port_range=1-2"),
    "prediction-list": lambda r: r.update(prediction=[1, 2]),
    "status-unknown": lambda r: r.update(status="great"),
    "nan-total": lambda r: r["totals"].update(connections=float("nan")),
    "held-list": lambda r: r.update(held_ports=[1, 2]),
    "limits-text": lambda r: r.update(host_limits=["conntrack"]),
    "at-connect-list": lambda r: r.update(host_tcp={"at_connect": [1]}),
    "churn-verdict-list": lambda r: r.update(churn={"verdict": [1]}),
    "top-level-list": lambda r: (r.clear(), r.update({"_": None})),
}


def test_a_bad_run_json_is_a_failed_run_with_its_reason_not_a_failed_report(tmp_path, capsys):
    root = tmp_path / "runs"
    params = RunParams(port_range="40000-40999")
    dirs = []
    for name, damage in {"good": lambda r: None, **BAD_RECORDS}.items():
        write_ok_run(root / name, name, params, held=[[]], per_proc=[1000], error="EADDRNOTAVAIL")
        record = json.loads((root / name / results.RUN_JSON).read_text())
        damage(record)
        text = json.dumps(record if name != "top-level-list" else [record])
        (root / name / results.RUN_JSON).write_text(text)  # NaN as json writes it
        dirs.append(root / name)
    assert main(["dataset", *map(str, dirs), "--out", str(tmp_path / "ds")]) == 0
    err = capsys.readouterr().err
    runs = {r["run_dir"]: r for r in
            pl.read_parquet(tmp_path / "ds" / "runs.parquet").iter_rows(named=True)}
    assert runs[str(root / "good")]["status"] == "ok"
    for name in BAD_RECORDS:
        row = runs[str(root / name)]
        assert row["status"] == "failed", name
        assert row["reason"].startswith(f"no readable run.json in {root / name}: "), row
        assert f"{root / name}: no readable run.json" in err
    assert "NaN is not a number JSON allows" in runs[str(root / "nan-total")]["reason"]
    assert "status 'great' is none of ok, failed, unsupported" in \
        runs[str(root / "status-unknown")]["reason"]
    report = tmp_path / "report"
    assert main(["report", "--dataset", str(tmp_path / "ds"), "--out", str(report),
                 "--browser-check", "no"]) == 0
    page = (report / "index.html").read_text()
    assert "status &#x27;great&#x27; is none of" in page or "status 'great' is none of" in page
