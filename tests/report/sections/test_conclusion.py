"""Section 14 and the sweep's summary (tcplimits.report.sections.conclusion)."""

from __future__ import annotations

import polars as pl

from tests.report.fixtures import flag_noisy, tables_of
from tcplimits.report.data import Data, status_counts
from tcplimits.report.render import md_escape
from tcplimits.report.sections import conclusion


def test_conclusion(d, failed_only):
    text = conclusion.conclusion(d).text()
    assert "The most one server accepted here is **64,511** on a single port" in text
    assert "more than the 64,511" not in text  # equal is not more
    name = {r: f"*{md_escape(d.name(r))}*" for r in d.every["run_id"]}  # points by name
    assert f"at {name['seed-default']} 2 client containers held 56,462 connections" in text
    assert (f"Where the server ran out of descriptors ({name['server-1024']}) it accepted "
            "1,020") in text
    assert (f"the most one client held is 64,511 ({name['seed-wide-range']}, 64,512 ports)"
            in text)
    assert "Its descriptors: nofile − 3 per process" in text
    assert f"{name['nofile-300']} held 297" in text
    assert "seed-default" not in text  # run ids stay in tooltips and tables
    assert "The model predicted" in text
    assert "cannot answer how many a server holds" in conclusion.conclusion(failed_only).text()


def test_client_answer_without_bound_points(d):
    only_server = Data.of({**tables_of(d),
                           "runs": d.runs.filter(pl.col("run_id") == "server-1024")})
    text = conclusion.client_answer(only_server)
    assert "no point of this run set was bound by it" in text
    assert "no point of this run set was bound by them" in text
    assert conclusion.server_answer(Data.of(
        {k: v.clear() for k, v in tables_of(d).items()})) == []


def test_sweep_summary_counts_points_and_verdicts_and_names_what_went_wrong(d, empty):
    lines = conclusion.sweep_summary(d).splitlines()
    counts = status_counts(d.runs)
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
    flagged = conclusion.sweep_summary(flag_noisy(d, ["seed-default"])).splitlines()
    at = flagged.index("noisy: 1 point, counts exact, times suspect:")
    assert flagged[at + 1].startswith("  seed-default: host not quiet after 60 s")
    assert conclusion.sweep_summary(empty) == "no point was run"
