"""The report's Churn section: its table and charts from a dataset with churn points, and the
section in a rendered report."""

import re
from pathlib import Path

import polars as pl
import pytest

from tests.report.fixtures import ENV, RUN_IDS, assert_tooltips, synthetic_dataset
from tcplimits.report import charts, labels, render
from tcplimits.report.data import Data
from tcplimits.report.sections import churn as churn_findings, conclusion, runset
from tcplimits.model import churn as churn_model
from tcplimits.results import dataset
from tcplimits.config.params import RunParams
from tcplimits.results import write_parquet

REPORT = render.REPORT_SOURCE

# run id, params, per process (connections, error, elapsed_s), TIME_WAIT (client, server) peak
CHURN = [
    ("churn-tw", dict(rate=400, closer="client", tw_reuse=0, duration=6),
     (999, "EADDRNOTAVAIL", 2.5), (999, 0)),
    ("churn-reuse", dict(rate=400, closer="client", tw_reuse=1, duration=5),
     (2000, "DURATION", 5.0), (500, 0)),
    ("churn-server", dict(rate="max", closer="server", tw_reuse=0, duration=4),
     (14000, "DURATION", 4.0), (0, 500)),
]


def churn_tables():
    runs, clients, series = [], [], []
    for run_id, values, (n, err, t), (tw_c, tw_s) in CHURN:
        params = RunParams.from_mapping({"mode": "churn", "port_range": "40000-40999", **values})
        row = [dict(client=1, proc=1, connections=n, error=err, elapsed_s=t, held_ports=1)]
        record = {"run_id": run_id, "status": "ok", "params": params.to_dict(),
                  "churn": churn_model.run_record(run_id, params, row, [1], finished=True)}
        runs.append({**dataset.run_row(record, Path(run_id)), **ENV})  # the hold points' host
        clients.append({"run_id": run_id, **row[0], **params.to_dict()})
        for s in range(int(t) + 1):
            series.append(dict(run_id=run_id, role="client", client=1, proc=1, t_s=float(s),
                               opened=n // (int(t) + 1), errors=0))
            series.append(dict(run_id=run_id, role="client", client=1, t_s=s + 0.5,
                               time_wait=tw_c))
            series.append(dict(run_id=run_id, role="server", t_s=s + 0.5, time_wait=tw_s))
    return (dataset.conform(pl.DataFrame(runs, infer_schema_length=None), dataset.RUNS_SCHEMA),
            dataset.conform(pl.DataFrame(clients, infer_schema_length=None),
                            dataset.CLIENTS_SCHEMA),
            dataset.conform(pl.DataFrame(series, infer_schema_length=None),
                            dataset.CHURN_SCHEMA))


def test_points_carry_rate_model_and_verdict():
    runs, _, _ = churn_tables()
    pts = churn_findings.churn_points(runs)
    assert pts["point"].to_list() == ["base point", "tw_reuse 1, 5 s",
                                      "server closes, max rate, 4 s"]
    assert pts["outcome"].to_list() == ["EADDRNOTAVAIL", "DURATION", "DURATION"]
    assert pts["agrees"].to_list() == [True, True, True]
    assert pts["model_bound"][0] == pytest.approx(999 / 60)
    assert pts["model_bound"][1] == pytest.approx(999.0)
    assert pts["model_bound"][2] is None  # no port bound when the server closes first
    assert pts["sustained"][1] == pytest.approx(400)
    assert churn_findings.churn_counts(pts) == {"points": 3, "agree": 3, "stopped": 1, "ran": 2}


def test_hold_sections_leave_churn_runs_out():
    runs, clients, series = churn_tables()
    hold = dataset.conform(pl.DataFrame({"run_id": ["h"], "status": ["ok"]}), dataset.RUNS_SCHEMA)
    d = Data.of({"runs": pl.concat([runs, hold]), "clients": clients,
                          "server": pl.DataFrame(), "series": pl.DataFrame(), "churn": series})
    assert d.runs["run_id"].to_list() == ["h"] and d.clients.is_empty()
    assert d.churn_runs.height == 3 and d.churn.height == series.height
    assert d.comparisons == []  # the hold model never judges a churn point
    section = churn_findings.churn(d)
    assert section.kinds() == ["markdown", "markdown", "chart", "chart", "html"]
    assert "3 of 3" in section.text() and "60 s" in section.text()


def test_churn_section_without_churn_points_says_how_to_get_them():
    d = Data.of({"runs": pl.DataFrame({"run_id": ["h"], "status": ["ok"]}),
                          "clients": pl.DataFrame(), "server": pl.DataFrame(),
                          "series": pl.DataFrame()})
    assert "config/churn.yaml" in churn_findings.churn(d).text()


def test_churn_points_are_named_by_the_one_labelling_function():
    runs, _, _ = churn_tables()
    names = churn_findings.churn_labels(runs)
    assert names == {r: n for r, n in labels.point_labels(runs).items()
                     if r in runs.filter(pl.col("status") == "ok")["run_id"].to_list()}
    given = {r: f"name of {r}" for r in runs["run_id"]}
    points = churn_findings.churn_points(runs, given)
    assert points["point"].to_list() == [given[r] for r in points["run_id"]]


def test_a_bind_point_is_judged_against_one_pool_per_source(tmp_path):
    params = RunParams.from_mapping({"mode": "churn", "port_range": "40000-40999", "rate": 400,
                                     "tw_reuse": 1, "server_ports": 2, "bind_mode": "bind"})
    row = [dict(client=1, proc=1, connections=1000, error="EADDRINUSE", elapsed_s=2.5,
                held_ports=1, held_other_addr=1)]  # Docker's DNS port, on 127.0.0.11
    record = churn_model.run_record("b", params, row, [[{"addr": "127.0.0.11", "port": 40500}]],
                                    finished=True)
    assert record["prediction"]["stop_after"] == [1000]
    assert record["verdict"]["agrees"], record["verdict"]["sentence"]
    assert "tcp_tw_reuse does not help bind()" in record["verdict"]["sentence"]


def test_churn_charts_draw_every_point():
    runs, _, series = churn_tables()
    labels = churn_findings.churn_labels(runs)
    timeline = charts.churn_timeline(series, labels).to_dict()
    assert timeline["usermeta"]["tcplimits"]["chart"] == "churn_timeline"
    values = timeline["datasets"][next(iter(timeline["datasets"]))]
    assert {v["series"] for v in values} == {"opened per second", "TIME_WAIT, client",
                                             "TIME_WAIT, server"}
    assert {v["point"] for v in values} == set(labels.values())
    rate = charts.churn_rate_vs_model(churn_findings.churn_points(runs)).to_dict()
    assert rate["usermeta"]["tcplimits"]["chart"] == "churn_rate_vs_model"
    assert_tooltips(timeline)
    assert_tooltips(rate)


def test_report_has_a_churn_section_with_a_verdict_per_point(tmp_path):
    ds = synthetic_dataset(tmp_path / "ds")
    runs, clients, series = churn_tables()
    old = pl.read_parquet(ds / "runs.parquet")
    write_parquet(pl.concat([old, runs.select(old.columns)], how="vertical_relaxed"),
                  ds / "runs.parquet")
    old = pl.read_parquet(ds / "clients.parquet")
    write_parquet(pl.concat([old, clients.select(old.columns)], how="vertical_relaxed"),
                  ds / "clients.parquet")
    write_parquet(series, ds / "churn.parquet")
    page = render.render_report(ds, tmp_path / "out", REPORT, engine="nbconvert").read_text()
    section = page[page.index('id="sec-churn"'):page.index('id="sec-nat"')]
    section = re.sub(r"<script\b.*?</script>", "", section, flags=re.S)  # the charts' specs
    assert section.count('class="tcpl-chart"') == 2
    assert section.count("as predicted: ") == 3
    assert "3 of 3" in section and "60 s" in section
    # the sections about held connections still show only the hold points...
    assert page.count('class="tcpl-chart"') == 5 + 2
    assert all(r in page for r in RUN_IDS)
    # ... while the run set, its host and how to rerun a point count the churn points too
    points = len(RUN_IDS) + len(CHURN)
    assert f"This run set has <strong>{points} points</strong>" in page
    assert '3 of them are churn points (<a href="#sec-churn">Section 13</a>).' in page
    assert f"All {points} points ran on one host" in page
    assert f"The {points} points: compose file and command of each" in page


def test_sweep_summary_counts_churn_verdicts_apart_from_hold_points():
    runs, clients, series = churn_tables()
    d = Data.of({"runs": runs, "clients": clients, "server": pl.DataFrame(),
                          "series": pl.DataFrame(), "churn": series})
    assert conclusion.sweep_summary(d).splitlines() == [
        "3 points: 3 ok",
        "churn: 3 of 3 finished points as the model predicted (1 stopped on an error, 2 ran "
        "their full duration)"]


def test_a_churn_only_run_set_is_described_and_its_failed_points_listed():
    runs, clients, series = churn_tables()
    runs = runs.with_columns(
        status=pl.when(pl.col("run_id") == "churn-server").then(pl.lit("failed"))
        .otherwise(pl.col("status")),
        reason=pl.when(pl.col("run_id") == "churn-server").then(pl.lit("server container "
                                                                       "killed")))
    d = Data.of({"runs": runs, "clients": clients, "server": pl.DataFrame(),
                          "series": pl.DataFrame(), "churn": series})
    question = runset.question(d).text()
    assert "**3 points**: 2 finished, 1 failed" in question
    assert "All of them are churn points (@sec-churn)" in question
    assert "no runs at all" not in question
    varied = runset.varied_parameters(d.every)  # what the churn points vary, and why
    assert {"closer", "tw_reuse", "rate", "duration"} <= set(varied["parameter"])
    assert varied.filter(pl.col("parameter") == "closer")["values"].to_list() == ["client, server"]
    assert varied.filter(pl.col("parameter") == "rate")["values"].to_list() == ["400, max"]
    environment = runset.environment(d)  # the churn runs' own kernel, engine and host
    assert environment.kinds() == ["html", "markdown", "html"]
    assert "6.18.0-1-amd64" in environment.text() and "node1" in environment.text()
    unfinished = runset.unfinished_rows(d.every)
    assert unfinished["point"].to_list() == ["churn-server"]
    assert unfinished["reason"].to_list() == ["server container killed"]
    assert runset.unfinished(d).kinds() == ["markdown", "html"]
    assert "@sec-churn" in conclusion.conclusion(d).text()
    assert "failed: 1 point, no measurement:\n  churn-server: server container killed" in \
        conclusion.sweep_summary(d)


def test_the_conclusion_answers_for_churn_from_the_points():
    runs, clients, series = churn_tables()
    points = churn_findings.churn_points(runs)
    text = churn_findings.churn_answer(points)
    assert "stays 60 s in TIME_WAIT (1 s with tcp_tw_reuse=1)" in text
    assert "1 point asked for more and stopped: 1 with EADDRNOTAVAIL; 1 of them after the count" \
        in text
    # the fastest point that ran its duration: the server closing first, at max
    assert "2 points ran their full duration, the fastest at 3,500/s (*server closes, " in text
    assert text.endswith("3 of 3 churn points ended as the model said (@sec-churn).")
    assert churn_findings.churn_answer(points.clear()) == ""
    d = Data.of({"runs": runs, "clients": clients, "server": pl.DataFrame(),
                          "series": pl.DataFrame(), "churn": series})
    assert text in conclusion.conclusion(d).text()
