"""Sections 1, 2 and 11 (tcplimits.report.sections.runset): the question, the environment and
hosts, the unfinished points and how to rerun any point."""

from __future__ import annotations

import polars as pl

from tests.report.fixtures import POINTS, tables_of
from tcplimits.config.params import FIELDS
from tcplimits.report import charts
from tcplimits.report.data import Data
from tcplimits.report.sections import runset


def test_question_counts_statuses_and_varied_parameters(d, empty):
    text = runset.question(d).text()
    assert "**9 points**: 7 finished, 1 failed and 1 could not run" in text
    varied = runset.varied_parameters(d.runs)
    assert set(varied["parameter"]) >= {"port_range", "nofile", "procs", "clients"}
    assert "timeout" not in set(varied["parameter"])  # never varied in the fixture
    row = varied.filter(pl.col("parameter") == "clients").row(0, named=True)
    assert row["values"] == "1, 2" and row["tests"] == runset.WHAT_IT_TESTS["clients"]
    assert "no runs at all" in runset.question(empty).text()
    one = runset.question(Data.of({k: v.head(1) for k, v in tables_of(d).items()}))
    assert "No parameter varies" in one.text()


def test_environment_facts_and_grid(d, empty):
    facts = dict(runset.environment_facts(d.runs).iter_rows())
    assert facts["Kernel"] == "6.18.0-1-amd64"
    assert facts["Engine nofile cap"].startswith("20,000")
    assert facts["Runs"] == "2025-11-25 11:10 to 2025-11-25 11:26 UTC"
    grid = {r["parameter"]: r for r in runset.grid_table(d.runs).iter_rows(named=True)}
    assert list(grid) == list(FIELDS)
    assert grid["server_nofile"]["values"] == "1,024, engine cap"   # null means the cap
    assert grid["max_connections"]["values"] == "default"
    assert grid["nofile"]["meaning"] == FIELDS["nofile"].help
    blocks = runset.environment(d)
    assert blocks.kinds() == ["html", "markdown", "html"] and 'class="tcpl-table kv"' in blocks[0][1]
    assert runset.environment(empty).text() == "No run recorded its environment."


def test_hosts_one_line_for_one_host_a_table_and_chart_for_several(d, empty):
    assert dict(runset.environment_facts(d.runs).iter_rows())["Host"] == "node1"
    assert runset.hosts(d).text() == f"All {d.runs.height} points ran on one host, `node1`."
    assert runset.hosts(empty) == []

    # The same points spread over two hosts, the second on another kernel; one unrecorded.
    runs = d.runs.with_row_index().with_columns(
        env_hostname=pl.when(pl.col("index") == 0).then(None)
        .when(pl.col("index") % 2 == 0).then(pl.lit("node1")).otherwise(pl.lit("node2")),
        env_kernel=pl.when(pl.col("index") % 2 == 1).then(pl.lit("6.1.0-9-amd64"))
        .otherwise(pl.col("env_kernel"))).drop("index")
    two = Data.of({**tables_of(d), "runs": runs})
    table = {r["host"]: r for r in runset.hosts_table(runs).iter_rows(named=True)}
    assert list(table) == ["node1", "node2", "not recorded"]
    assert sum(r["points"] for r in table.values()) == runs.height
    for host, row in table.items():
        mine = runs.filter(pl.col("env_hostname").fill_null("not recorded") == host)
        assert row["points"] == mine.height
        assert row["finished"] == mine.filter(pl.col("status") == "ok").height
        assert row["connections"] == mine["connections_total"].sum()
    assert table["node2"]["kernel"] == "6.1.0-9-amd64"
    blocks = runset.hosts(two)
    assert blocks.kinds() == ["markdown", "html", "chart"]
    assert "3 hosts" in blocks.text() and "node2" in blocks.text()
    chart = blocks[-1][1].to_dict()
    drawn = {row["run_id"]: row["host"] for rows in chart["datasets"].values() for row in rows}
    ok = runs.filter(pl.col("status") == "ok")
    assert drawn == dict(zip(ok["run_id"], ok["env_hostname"].fill_null("not recorded")))
    assert "by_host" in charts.to_html(blocks[-1][1])


def test_unfinished_and_rerun(d, empty):
    rows = runset.unfinished_rows(d.runs)
    assert set(rows["point"]) == {"seed-nofile-100000", "broken-server"}
    reason = rows.filter(pl.col("point") == "broken-server")["reason"].item()
    assert reason.startswith("server container exited")
    assert "--nofile 1000" in rows.filter(pl.col("point") == "broken-server")["parameters"].item()
    assert runset.unfinished(d).kinds() == ["markdown", "html"]
    assert runset.unfinished(empty).text() == "No point was run."
    ok_only = Data.of({**tables_of(d), "runs": d.ok})
    assert runset.unfinished(ok_only).text() == "Every point ran to its end."

    again = runset.rerun_rows(d.runs)
    assert again.height == len(POINTS)
    row = again.filter(pl.col("point") == "range-1000").row(0, named=True)
    assert row["compose file"].endswith("runs/range-1000/compose.yml")
    assert row["tcplimits run"].startswith("tcplimits run --port-range 40000-40999 --nofile 15000")
    assert "<details><summary>The 9 points" in runset.rerun(d).text()
    assert runset.rerun(empty) == []


def test_what_it_tests_names_every_parameter_a_sweep_can_vary():
    from tcplimits.config.grid import load_schema

    can_vary = set(load_schema()["properties"]["grid"]["properties"])
    assert set(runset.WHAT_IT_TESTS) == can_vary == set(FIELDS)  # none missing
    assert set(runset.SWEEP_TESTS) <= can_vary                   # no stale key
    for name, said in runset.WHAT_IT_TESTS.items():   # one text each: the sweep's or the help
        assert said == runset.SWEEP_TESTS.get(name, FIELDS[name].help)
        assert said != FIELDS[name].help or name not in runset.SWEEP_TESTS
