"""Sections 3 to 8 (tcplimits.report.sections.hold): the seed, the port pool, the outcomes,
observed against predicted, connect latency and the server side."""

from __future__ import annotations

import polars as pl

from tests.report.fixtures import POINTS, flag_noisy, procs_of, tables_of, workers_of
from tcplimits import model
from tcplimits.config.params import port_count
from tcplimits.report import render
from tcplimits.report.blocks import plural
from tcplimits.report.data import Data, noisy_runs
from tcplimits.report.sections import hold


def test_seed_constants():
    assert port_count(hold.WIDE_RANGE) == 64_512
    assert port_count(hold.SEED_RANGE) == hold.SEED_PER_CLIENT


# --- 3. the seed ------------------------------------------------------------------------------

def test_seed_rows(d):
    rows, default_ids, wide_ids = hold.seed_rows(d)
    assert default_ids == ["seed-default"] and wide_ids == ["seed-wide-range"]
    table = rows.to_dicts()
    assert table[0]["this run set"] == "28,231" and table[0]["details"] == "stopped with EADDRNOTAVAIL"
    assert table[1]["the blog"].endswith("the range holds 64,512")
    assert table[1]["this run set"] == "64,511"
    assert table[2]["this run set"] == "64,511" and table[2]["the blog"] == "56,464 (2 × 28,232)"
    assert (f"{d.name('seed-wide-range')}: 1 client container, range 1024-65535"
            == table[2]["details"])


def test_seed_headline_explains_the_missing_port(d):
    page = hold.seed_headline(d, ["seed-default"], ["seed-wide-range"])
    assert page.startswith('<p class="headline">')
    assert "<strong>28,231</strong> connections and stopped with EADDRNOTAVAIL, 1 connection " \
           "short of the blog's 28,232" in page
    assert "predicts these counts exactly" in page
    assert "<strong>64,511</strong>" in page and "as many as the 64,511" in page
    none = hold.seed_headline(d, [], [])
    assert "not re-measured here" in none and "1024–65535" not in none


def test_seed_section(d, failed_only):
    assert hold.seed(d).kinds() == ["html", "html"]
    assert "nothing to set against" in hold.seed(failed_only).text()


# --- 4, 5 -------------------------------------------------------------------------------------

def test_on_the_line_counts_exact_points(d):
    text = hold.on_the_line(d)
    ports = [c for c in d.comparisons if c.limit == model.PORTS]
    exact = sum(c.observed == c.expected for c in ports)
    assert f"Of the {plural(len(ports), 'port-bound point')}, {exact:,} held" in text
    assert f"(nofile − {model.CLIENT_BASELINE_FDS})" in text


def test_port_pool_section(d, empty):
    blocks = hold.port_pool(d)
    assert blocks.kinds() == ["markdown", "chart"]
    assert blocks[1][1].to_dict()["usermeta"]["tcplimits"]["chart"] == "connections_vs_range"
    assert hold.port_pool(empty).text() == "No client recorded a count."


def test_errno_summary(d):
    summary = hold.errno_summary(d.clients)
    rows = {r["error"]: r for r in summary.iter_rows(named=True)}
    expected = {}
    for p in POINTS:
        for *_, err in p[4]:
            expected.setdefault(err, []).append(p[0])
    assert {e: (r["processes"], r["points"]) for e, r in rows.items()} == {
        e: (len(ids), len(set(ids))) for e, ids in expected.items()}
    assert summary["processes"].to_list() == sorted(summary["processes"], reverse=True)
    assert rows["EMFILE"]["meaning"] == "the process reached its own descriptor limit (nofile - 3)"
    assert hold.errno_meaning("EWHATEVER") == "see the run's logs"
    # every stop the model can predict has its meaning, the bind pool's included
    from tcplimits.model import fourtuple

    for errno_name in set(fourtuple.POOL_ERRNO.values()):
        assert hold.errno_meaning(errno_name) != "see the run's logs", errno_name


def test_outcomes_section(d, empty):
    assert hold.outcomes(d).kinds() == ["chart", "html"]
    assert "No client process" in hold.outcomes(empty).text()


# --- 6. observed against predicted ------------------------------------------------------------

def test_model_terms_use_the_models_constants():
    text = hold.model_terms().text()
    assert f"(nofile − {model.CLIENT_BASELINE_FDS})" in text
    assert f"(nofile − {model.SERVER_BASELINE_FDS})" in text


def test_agreement(d):
    text = hold.agreement(d.comparisons)
    agree = sum(c.within_tolerance for c in d.comparisons)
    assert text.startswith(f"**{agree} of 7 finished points** agree")
    assert "max(2, 0.5% of the prediction)" in text
    # the most frequent limit comes first
    assert text.endswith("ports at 5 points, descriptors at 1 point, server at 1 point.")
    blocks = hold.observed_vs_predicted(d)
    assert blocks.kinds() == ["markdown", "chart"]


def _comparison(run_id, predicted, expected, observed, explanations=()):
    return model.Comparison(run_id, observed, predicted, expected, model.PORTS, "EADDRNOTAVAIL",
                            {"EADDRNOTAVAIL": 2}, None, list(explanations))


def test_held_ports_column_only_where_the_predictions_differ():
    same = [_comparison("a", 999, 999, 999), _comparison("b", 499, 499, 499)]
    rows = hold.comparison_rows(same)
    assert "with held ports" not in rows.columns
    assert "already counts" in hold.held_ports_note(same)
    differ = [_comparison("a", 1000, 999, 999, ["held"]), _comparison("b", 499, 499, 499)]
    rows = hold.comparison_rows(differ)
    assert rows["with held ports"].to_list() == [999, None]
    assert rows["predicted"].to_list() == [1000, 499]
    assert "At 1 point the recorded prediction did not count" in hold.held_ports_note(differ)
    assert rows["stopped with"].to_list() == ["EADDRNOTAVAIL ×2"] * 2
    assert rows["explanation"].to_list() == ["<ul class=\"\"><li>held</li></ul>", "as predicted"]


def test_comparison_table_has_no_engine_notes(d):
    blocks = hold.comparison_table(d)
    text = blocks.text()
    assert "engine's notes" not in text and "DNS resolver, which listens" not in text
    assert "Points beyond the tolerance (1)" in text
    assert f"**{render.md_escape(d.name('short-timeout'))}** (`short-timeout`)" in text
    assert "stopped with ETIMEDOUT" in text  # the model's explanation
    assert blocks.kinds() == ["markdown", "html", "markdown"]
    assert hold.comparison_table(Data.of({k: v.clear() for k, v in tables_of(d).items()})) == []


def test_beyond_tolerance_without_deviations():
    assert hold.beyond_tolerance([_comparison("a", 10, 10, 10)]).startswith(
        "No point deviates")
    text = hold.beyond_tolerance([_comparison("a", 100, 100, 50)])
    assert "observed 50, predicted 100 (-50; tolerance ±2)" in text
    assert "- no cause found in the data" in text


# --- 7, 8 -------------------------------------------------------------------------------------

def test_latency_medians(d, empty):
    early, late = hold.latency_medians(d)
    assert 14e-6 <= early < 15e-6          # the fixture's flat part
    assert late > 10 * early               # past half the range every connect() searches
    assert hold.latency_medians(empty) == (None, None)
    blocks = hold.latency(d)
    assert blocks.kinds() == ["chart", "markdown"] and "× slower" in blocks.text()
    assert "No port-bound point" in hold.latency(empty).text()


def test_latency_flags_noisy_points_and_leaves_them_out_of_the_medians(d):
    assert noisy_runs(d.runs).is_empty() and hold.noisy_note(d.runs, ["x"]) == ""
    assert noisy_runs(d.runs.drop("noisy")).is_empty()  # an older dataset
    # seed-default's connect() times made 1,000 x slower: counted only while not flagged noisy
    slow = d.series.with_columns(connect_latency_s=pl.when(pl.col("run_id") == "seed-default")
                                 .then(pl.col("connect_latency_s") * 1000)
                                 .otherwise(pl.col("connect_latency_s")))
    slowed = Data(d.runs, d.clients, d.server, slow)
    flagged = flag_noisy(slowed, ["seed-default"])
    without = Data(d.runs, d.clients, d.server,
                   d.series.filter(pl.col("run_id") != "seed-default"))
    assert hold.latency_medians(flagged) == hold.latency_medians(without)
    assert hold.latency_medians(slowed) != hold.latency_medians(without)
    blocks = hold.latency(flagged)
    assert blocks.kinds() == ["chart", "markdown", "markdown"]
    text = blocks.text()
    assert "1 point ran noisy" in text
    name = render.md_escape(flagged.name("seed-default"))
    assert f"- {name}: host not quiet after 60 s: 9,000 orphaned" in text
    # every point noisy: the medians still come from them (flagged), not from nothing
    everything = flag_noisy(d, d.runs["run_id"].to_list())
    assert hold.latency_medians(everything) == hold.latency_medians(d)
    assert "points ran noisy" in hold.latency(everything).text()


def test_server_gaps_use_the_models_accept_queue(d):
    gaps = hold.server_gap_table(d)
    assert gaps["point"].to_list() == [d.name("server-1024")]
    assert gaps["run id"].to_list() == ["server-1024"] and gaps.columns[-1] == "run id"
    row = gaps.row(0, named=True)
    held = sum(p[2] for p in procs_of("server-1024"))
    accepted = sum(w[0] for w in workers_of("server-1024"))
    assert row["clients hold"] == held and row["server accepted"] == accepted
    assert row["gap"] == held - accepted
    assert row["backlog + 1"] == model.accept_queue(128)  # the fixture's backlog
    assert row["workers"] == 1 and row["worker nofile"] == 1024
    assert row["server stopped with"] == "EMFILE"


def test_server_side_section(d, failed_only):
    blocks = hold.server_side(d)
    assert blocks.kinds() == ["chart", "markdown", "html"]
    assert "At 6 of 7 points the server accepted every connection" in blocks.text()
    assert "No finished point" in hold.server_side(failed_only).text()
