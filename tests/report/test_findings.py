"""The report's findings (tcplimits.report.findings), on the synthetic dataset of report_fixtures and on
small frames made here. Every function report/report.qmd calls is exercised."""

from __future__ import annotations

import polars as pl
import pytest

from tests.report.fixtures import POINTS, synthetic_dataset
from tcplimits.report import charts, findings, render
from tcplimits.results import dataset
from tcplimits import model
from tcplimits.config.params import FIELDS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def d(data_dir) -> findings.Data:
    return findings.load(data_dir)


@pytest.fixture(scope="module")
def empty(tmp_path_factory) -> findings.Data:
    return findings.load(synthetic_dataset(tmp_path_factory.mktemp("empty"), "empty"))


@pytest.fixture(scope="module")
def failed_only(tmp_path_factory) -> findings.Data:
    return findings.load(synthetic_dataset(tmp_path_factory.mktemp("failed"), "failed"))


def _procs(run_id):
    return next(p[4] for p in POINTS if p[0] == run_id)


def _workers(run_id):
    return next(p[5] for p in POINTS if p[0] == run_id)


def _per_client(run_id):
    out = {}
    for client, _, n, _ in _procs(run_id):
        out[client] = out.get(client, 0) + n
    return out


# --- data and helpers -------------------------------------------------------------------------

def test_load_reads_the_tables_and_compares_finished_runs(d):
    assert d.runs.height == len(POINTS)
    assert set(d.ok["run_id"]) == {p[0] for p in POINTS if p[2] == "ok"}
    assert set(d.unfinished["status"]) == {"failed", "unsupported"}
    assert {c.run_id for c in d.comparisons} == set(d.ok["run_id"])
    assert d.by_id["nofile-300"].observed == 297


def test_helpers():
    assert findings.plural(1, "point") == "1 point" and findings.plural(2, "point") == "2 points"
    assert findings.span([]) == "–" and findings.span([5, 5]) == "5"
    assert findings.span([28231, 1000]) == "1,000 – 28,231"
    df = pl.DataFrame({"x": [3, None, 1, 3]})
    assert findings.values(df, "x") == [1, 3] and findings.values(df, "y") == []
    assert findings.port_count(findings.WIDE_RANGE) == 64_512
    assert findings.port_count(findings.SEED_RANGE) == findings.SEED_PER_CLIENT


def test_client_counts_sum_processes_per_container(d):
    assert sorted(findings.client_counts(d.clients, ["seed-default"])) == sorted(
        _per_client("seed-default").values())
    assert findings.client_counts(d.clients, ["no-such-run"]) == []


def test_most_accepted_is_a_finished_run(d):
    best = findings.most_accepted(d.runs)
    accepted = {p[0]: sum(w[0] for w in p[5]) for p in POINTS if p[2] == "ok"}
    assert best["run_id"] == max(accepted, key=accepted.get)
    assert best["server_accepted"] == max(accepted.values())
    assert findings.most_accepted(d.runs.clear()) is None


def test_blocks_display_in_order(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    chart = object()
    blocks = findings.Blocks().md("*a*").html("<b>b</b>").chart(chart)
    blocks._ipython_display_()
    assert [type(x).__name__ for x in shown] == ["Markdown", "HTML", "object"]
    assert shown[0].data == "*a*" and shown[2] is chart
    assert blocks.text() == "*a*\n<b>b</b>" and blocks.kinds() == ["markdown", "html", "chart"]


# --- 1, 2 -------------------------------------------------------------------------------------

def test_question_counts_statuses_and_varied_parameters(d, empty):
    text = findings.question(d).text()
    assert "**9 points**: 7 finished, 1 failed and 1 could not run" in text
    varied = findings.varied_parameters(d.runs)
    assert set(varied["parameter"]) >= {"port_range", "nofile", "procs", "clients"}
    assert "timeout" not in set(varied["parameter"])  # never varied in the fixture
    row = varied.filter(pl.col("parameter") == "clients").row(0, named=True)
    assert row["values"] == "1, 2" and row["tests"] == findings.WHAT_IT_TESTS["clients"]
    assert "no runs at all" in findings.question(empty).text()
    one = findings.question(findings.Data.of({k: v.head(1) for k, v in _tables(d).items()}))
    assert "No parameter varies" in one.text()


def _tables(d):
    return {"runs": d.runs, "clients": d.clients, "server": d.server, "series": d.series}


def test_environment_facts_and_grid(d, empty):
    facts = dict(findings.environment_facts(d.runs).iter_rows())
    assert facts["Kernel"] == "6.18.0-1-amd64"
    assert facts["Engine nofile cap"].startswith("20,000")
    assert facts["Runs"] == "2025-11-25 11:10 to 2025-11-25 11:26 UTC"
    grid = {r["parameter"]: r for r in findings.grid_table(d.runs).iter_rows(named=True)}
    assert list(grid) == list(FIELDS)
    assert grid["server_nofile"]["values"] == "1,024, engine cap"   # null means the cap
    assert grid["max_connections"]["values"] == "default"
    assert grid["nofile"]["meaning"] == FIELDS["nofile"].help
    blocks = findings.environment(d)
    assert blocks.kinds() == ["html", "markdown", "html"] and 'class="tcpl-table kv"' in blocks[0][1]
    assert findings.environment(empty).text() == "No run recorded its environment."


def test_hosts_one_line_for_one_host_a_table_and_chart_for_several(d, empty):
    assert dict(findings.environment_facts(d.runs).iter_rows())["Host"] == "node1"
    assert findings.hosts(d).text() == f"All {d.runs.height} points ran on one host, `node1`."
    assert findings.hosts(empty) == []

    # The same points spread over two hosts, the second on another kernel; one unrecorded.
    runs = d.runs.with_row_index().with_columns(
        env_hostname=pl.when(pl.col("index") == 0).then(None)
        .when(pl.col("index") % 2 == 0).then(pl.lit("node1")).otherwise(pl.lit("node2")),
        env_kernel=pl.when(pl.col("index") % 2 == 1).then(pl.lit("6.1.0-9-amd64"))
        .otherwise(pl.col("env_kernel"))).drop("index")
    two = findings.Data.of({**_tables(d), "runs": runs})
    table = {r["host"]: r for r in findings.hosts_table(runs).iter_rows(named=True)}
    assert list(table) == ["node1", "node2", "not recorded"]
    assert sum(r["points"] for r in table.values()) == runs.height
    for host, row in table.items():
        mine = runs.filter(pl.col("env_hostname").fill_null("not recorded") == host)
        assert row["points"] == mine.height
        assert row["finished"] == mine.filter(pl.col("status") == "ok").height
        assert row["connections"] == mine["connections_total"].sum()
    assert table["node2"]["kernel"] == "6.1.0-9-amd64"
    blocks = findings.hosts(two)
    assert blocks.kinds() == ["markdown", "html", "chart"]
    assert "3 hosts" in blocks.text() and "node2" in blocks.text()
    chart = blocks[-1][1].to_dict()
    drawn = {row["run_id"]: row["host"] for rows in chart["datasets"].values() for row in rows}
    ok = runs.filter(pl.col("status") == "ok")
    assert drawn == dict(zip(ok["run_id"], ok["env_hostname"].fill_null("not recorded")))
    assert "by_host" in charts.to_html(blocks[-1][1])


# --- 3. the seed ------------------------------------------------------------------------------

def test_seed_rows(d):
    rows, default_ids, wide_ids = findings.seed_rows(d)
    assert default_ids == ["seed-default"] and wide_ids == ["seed-wide-range"]
    table = rows.to_dicts()
    assert table[0]["this run set"] == "28,231" and table[0]["details"] == "stopped with EADDRNOTAVAIL"
    assert table[1]["the blog"].endswith("the range holds 64,512")
    assert table[1]["this run set"] == "64,511"
    assert table[2]["this run set"] == "64,511" and table[2]["the blog"] == "56,464 (2 × 28,232)"
    assert "seed-wide-range: 1 client container, range 1024-65535" == table[2]["details"]


def test_seed_headline_explains_the_missing_port(d):
    page = findings.seed_headline(d, ["seed-default"], ["seed-wide-range"])
    assert page.startswith('<p class="headline">')
    assert "<strong>28,231</strong> connections and stopped with EADDRNOTAVAIL, 1 connection " \
           "short of the blog's 28,232" in page
    assert "predicts these counts exactly" in page
    assert "<strong>64,511</strong>" in page and "as many as the 64,511" in page
    none = findings.seed_headline(d, [], [])
    assert "not re-measured here" in none and "1024–65535" not in none


def test_seed_section(d, failed_only):
    assert findings.seed(d).kinds() == ["html", "html"]
    assert "nothing to set against" in findings.seed(failed_only).text()


# --- 4, 5 -------------------------------------------------------------------------------------

def test_on_the_line_counts_exact_points(d):
    text = findings.on_the_line(d)
    ports = [c for c in d.comparisons if c.limit == model.PORTS]
    exact = sum(c.observed == c.expected for c in ports)
    assert f"Of the {findings.plural(len(ports), 'port-bound point')}, {exact:,} held" in text
    assert f"(nofile − {model.CLIENT_BASELINE_FDS})" in text


def test_port_pool_section(d, empty):
    blocks = findings.port_pool(d)
    assert blocks.kinds() == ["markdown", "chart"]
    assert blocks[1][1].to_dict()["usermeta"]["tcplimits"]["chart"] == "connections_vs_range"
    assert findings.port_pool(empty).text() == "No client recorded a count."


def test_errno_summary(d):
    summary = findings.errno_summary(d.clients)
    rows = {r["error"]: r for r in summary.iter_rows(named=True)}
    expected = {}
    for p in POINTS:
        for *_, err in p[4]:
            expected.setdefault(err, []).append(p[0])
    assert {e: (r["processes"], r["points"]) for e, r in rows.items()} == {
        e: (len(ids), len(set(ids))) for e, ids in expected.items()}
    assert summary["processes"].to_list() == sorted(summary["processes"], reverse=True)
    assert rows["EMFILE"]["meaning"] == "the process reached its own descriptor limit (nofile - 3)"
    assert findings.errno_meaning("EWHATEVER") == "see the run's logs"
    # every stop the model can predict has its meaning, the bind pool's included
    from tcplimits.model import fourtuple

    for errno_name in set(fourtuple.POOL_ERRNO.values()):
        assert findings.errno_meaning(errno_name) != "see the run's logs", errno_name


def test_outcomes_section(d, empty):
    assert findings.outcomes(d).kinds() == ["chart", "html"]
    assert "No client process" in findings.outcomes(empty).text()


# --- 6. observed against predicted ------------------------------------------------------------

def test_model_terms_use_the_models_constants():
    text = findings.model_terms().text()
    assert f"(nofile − {model.CLIENT_BASELINE_FDS})" in text
    assert f"(nofile − {model.SERVER_BASELINE_FDS})" in text


def test_agreement(d):
    text = findings.agreement(d.comparisons)
    agree = sum(c.within_tolerance for c in d.comparisons)
    assert text.startswith(f"**{agree} of 7 finished points** agree")
    assert "max(2, 0.5% of the prediction)" in text
    # the most frequent limit comes first
    assert text.endswith("ports at 5 points, descriptors at 1 point, server at 1 point.")
    blocks = findings.observed_vs_predicted(d)
    assert blocks.kinds() == ["markdown", "chart"]


def _comparison(run_id, predicted, expected, observed, explanations=()):
    return model.Comparison(run_id, observed, predicted, expected, model.PORTS, "EADDRNOTAVAIL",
                            {"EADDRNOTAVAIL": 2}, None, list(explanations))


def test_held_ports_column_only_where_the_predictions_differ():
    same = [_comparison("a", 999, 999, 999), _comparison("b", 499, 499, 499)]
    rows = findings.comparison_rows(same)
    assert "with held ports" not in rows.columns
    assert "already counts" in findings.held_ports_note(same)
    differ = [_comparison("a", 1000, 999, 999, ["held"]), _comparison("b", 499, 499, 499)]
    rows = findings.comparison_rows(differ)
    assert rows["with held ports"].to_list() == [999, None]
    assert rows["predicted"].to_list() == [1000, 499]
    assert "At 1 point the recorded prediction did not count" in findings.held_ports_note(differ)
    assert rows["stopped with"].to_list() == ["EADDRNOTAVAIL ×2"] * 2
    assert rows["explanation"].to_list() == ["<ul class=\"\"><li>held</li></ul>", "as predicted"]


def test_comparison_table_has_no_engine_notes(d):
    blocks = findings.comparison_table(d)
    text = blocks.text()
    assert "engine's notes" not in text and "DNS resolver, which listens" not in text
    assert "Points beyond the tolerance (1)" in text and "**short-timeout**" in text
    assert "stopped with ETIMEDOUT" in text  # the model's explanation
    assert blocks.kinds() == ["markdown", "html", "markdown"]
    assert findings.comparison_table(findings.Data.of(
        {k: v.clear() for k, v in _tables(d).items()})) == []


def test_beyond_tolerance_without_deviations():
    assert findings.beyond_tolerance([_comparison("a", 10, 10, 10)]).startswith(
        "No point deviates")
    text = findings.beyond_tolerance([_comparison("a", 100, 100, 50)])
    assert "observed 50, predicted 100 (-50; tolerance ±2)" in text
    assert "- no cause found in the data" in text


# --- 7, 8 -------------------------------------------------------------------------------------

def test_latency_medians(d, empty):
    early, late = findings.latency_medians(d)
    assert 14e-6 <= early < 15e-6          # the fixture's flat part
    assert late > 10 * early               # past half the range every connect() searches
    assert findings.latency_medians(empty) == (None, None)
    blocks = findings.latency(d)
    assert blocks.kinds() == ["chart", "markdown"] and "× slower" in blocks.text()
    assert "No port-bound point" in findings.latency(empty).text()


def _flag(d, noisy_ids, reason="host not quiet after 60 s: 9,000 orphaned and 0 TIME-WAIT "
                                "sockets (threshold 1,000)"):
    runs = d.runs.with_columns(
        noisy=pl.col("run_id").is_in(noisy_ids),
        noisy_reason=pl.when(pl.col("run_id").is_in(noisy_ids)).then(pl.lit(reason)))
    return findings.Data(runs, d.clients, d.server, d.series)


def test_latency_flags_noisy_points_and_leaves_them_out_of_the_medians(d):
    assert findings.noisy_runs(d.runs).is_empty() and findings.noisy_note(d.runs, ["x"]) == ""
    assert findings.noisy_runs(d.runs.drop("noisy")).is_empty()  # an older dataset
    # seed-default's connect() times made 1,000 x slower: counted only while not flagged noisy
    slow = d.series.with_columns(connect_latency_s=pl.when(pl.col("run_id") == "seed-default")
                                 .then(pl.col("connect_latency_s") * 1000)
                                 .otherwise(pl.col("connect_latency_s")))
    slowed = findings.Data(d.runs, d.clients, d.server, slow)
    flagged = _flag(slowed, ["seed-default"])
    without = findings.Data(d.runs, d.clients, d.server,
                            d.series.filter(pl.col("run_id") != "seed-default"))
    assert findings.latency_medians(flagged) == findings.latency_medians(without)
    assert findings.latency_medians(slowed) != findings.latency_medians(without)
    blocks = findings.latency(flagged)
    assert blocks.kinds() == ["chart", "markdown", "markdown"]
    text = blocks.text()
    assert "1 point ran noisy" in text
    assert "- seed-default: host not quiet after 60 s: 9,000 orphaned" in text
    # every point noisy: the medians still come from them (flagged), not from nothing
    everything = _flag(d, d.runs["run_id"].to_list())
    assert findings.latency_medians(everything) == findings.latency_medians(d)
    assert "points ran noisy" in findings.latency(everything).text()


def test_server_gaps_use_the_models_accept_queue(d):
    gaps = findings.server_gaps(d)
    assert gaps["point"].to_list() == ["server-1024"]
    row = gaps.row(0, named=True)
    held = sum(p[2] for p in _procs("server-1024"))
    accepted = sum(w[0] for w in _workers("server-1024"))
    assert row["clients hold"] == held and row["server accepted"] == accepted
    assert row["gap"] == held - accepted
    assert row["backlog + 1"] == model.accept_queue(128)  # the fixture's backlog
    assert row["workers"] == 1 and row["worker nofile"] == 1024
    assert row["server stopped with"] == "EMFILE"


def test_server_side_section(d, failed_only):
    blocks = findings.server_side(d)
    assert blocks.kinds() == ["chart", "markdown", "html"]
    assert "At 6 of 7 points the server accepted every connection" in blocks.text()
    assert "No finished point" in findings.server_side(failed_only).text()


# --- 9, 10 ------------------------------------------------------------------------------------

def test_unfinished_and_rerun(d, empty):
    rows = findings.unfinished_rows(d.runs)
    assert set(rows["point"]) == {"seed-nofile-100000", "broken-server"}
    reason = rows.filter(pl.col("point") == "broken-server")["reason"].item()
    assert reason.startswith("server container exited")
    assert "--nofile 1000" in rows.filter(pl.col("point") == "broken-server")["parameters"].item()
    assert findings.unfinished(d).kinds() == ["markdown", "html"]
    assert findings.unfinished(empty).text() == "No point was run."
    ok_only = findings.Data.of({**_tables(d), "runs": d.ok})
    assert findings.unfinished(ok_only).text() == "Every point ran to its end."

    again = findings.rerun_rows(d.runs)
    assert again.height == len(POINTS)
    row = again.filter(pl.col("point") == "range-1000").row(0, named=True)
    assert row["compose file"].endswith("runs/range-1000/compose.yml")
    assert row["tcplimits run"].startswith("tcplimits run --port-range 40000-40999 --nofile 15000")
    assert "<details><summary>The 9 points" in findings.rerun(d).text()
    assert findings.rerun(empty) == []


def test_conclusion(d, failed_only):
    text = findings.conclusion(d).text()
    assert "The most one server accepted here is **64,511** on a single port" in text
    assert "more than the 64,511" not in text  # equal is not more
    assert "at seed-default 2 client containers held 56,462 connections" in text
    assert "Where the server ran out of descriptors (server-1024) it accepted 1,020" in text
    assert "the most one client held is 64,511 (seed-wide-range, 64,512 ports)" in text
    assert "Its descriptors: nofile − 3 per process" in text and "nofile-300 held 297" in text
    assert "The model predicted" in text
    assert "cannot answer how many a server holds" in findings.conclusion(failed_only).text()


def test_client_answer_without_bound_points(d):
    only_server = findings.Data.of({**_tables(d),
                                    "runs": d.runs.filter(pl.col("run_id") == "server-1024")})
    text = findings.client_answer(only_server)
    assert "no point of this run set was bound by it" in text
    assert "no point of this run set was bound by them" in text
    assert findings.server_answer(findings.Data.of(
        {k: v.clear() for k, v in _tables(d).items()})) == []


def test_the_report_calls_only_findings_and_charts(data_dir):
    """The .qmd holds prose and calls: each computing cell is one findings call."""
    import re

    source = (render.TEMPLATE_DIR.parents[3] / "report" / "report.qmd").read_text()
    cells = re.findall(r"```\{python\}\n(.*?)```", source, flags=re.S)
    calls = [c.strip() for c in cells if not c.startswith("#|")]
    assert calls and all(re.fullmatch(r"findings\.\w+\((d)?\)", c) for c in calls), calls
    for call in calls:
        assert hasattr(findings, call.split(".")[1].split("(")[0])
    assert dataset.TABLE_NAMES == ("runs", "clients", "server", "series", "destinations", "churn")
    assert charts.per_client  # the section functions draw with charts


def test_sweep_summary_counts_points_and_verdicts_and_names_what_went_wrong(d, empty):
    lines = findings.sweep_summary(d).splitlines()
    counts = findings.status_counts(d.runs)
    assert lines[0] == (f"{d.runs.height} points: {counts['ok']} ok, {counts['failed']} failed, "
                        f"{counts['unsupported']} unsupported")
    agree = sum(c.within_tolerance for c in d.comparisons)
    assert lines[1].startswith(f"hold: {agree} of {len(d.comparisons)} finished points as the "
                               "model predicted")
    assert agree < len(d.comparisons)  # the fixture's short-timeout point is beyond tolerance
    # every point without a measurement is named, with the reason its run recorded
    for r in d.unfinished.iter_rows(named=True):
        assert f"  {r['run_id']}: {r['reason']}" in lines
    assert not any(line.startswith("noisy") for line in lines)
    flagged = findings.sweep_summary(_flag(d, ["seed-default"])).splitlines()
    at = flagged.index("noisy: 1 point, counts exact, times suspect:")
    assert flagged[at + 1].startswith("  seed-default: host not quiet after 60 s")
    assert findings.sweep_summary(empty) == "no point was run"
