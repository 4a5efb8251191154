"""The dataset as the report reads it (tcplimits.report.data): Data, the values of a frame, the
model's verdicts counted, and the frames the sections and the charts share."""

from __future__ import annotations

import polars as pl

from tests.report.fixtures import POINTS, per_client_of
from tcplimits import model
from tcplimits.config.params import FIELDS
from tcplimits.report import data, render


def test_load_reads_the_tables_and_compares_finished_runs(d):
    assert d.runs.height == len(POINTS)
    assert set(d.ok["run_id"]) == {p[0] for p in POINTS if p[2] == "ok"}
    assert set(d.unfinished["status"]) == {"failed", "unsupported"}
    assert {c.run_id for c in d.comparisons} == set(d.ok["run_id"])
    assert d.by_id["nofile-300"].observed == 297


def test_helpers():
    assert data.span([]) == "–" and data.span([5, 5]) == "5"
    assert data.span([28231, 1000]) == "1,000 – 28,231"
    df = pl.DataFrame({"x": [3, None, 1, 3]})
    assert data.values(df, "x") == [1, 3] and data.values(df, "y") == []


def test_client_counts_sum_processes_per_container(d):
    assert sorted(data.client_counts(d.clients, ["seed-default"])) == sorted(
        per_client_of("seed-default").values())
    assert data.client_counts(d.clients, ["no-such-run"]) == []


def test_most_accepted_is_a_finished_run(d):
    best = data.most_accepted(d.runs)
    accepted = {p[0]: sum(w[0] for w in p[5]) for p in POINTS if p[2] == "ok"}
    assert best["run_id"] == max(accepted, key=accepted.get)
    assert best["server_accepted"] == max(accepted.values())
    assert data.most_accepted(d.runs.clear()) is None


def test_agreement_counts_points_within_exact_and_per_limit(d):
    a = data.agreement_counts(d.comparisons)
    assert a.points == len(d.comparisons) == 7
    assert a.within == sum(c.within_tolerance for c in d.comparisons) < a.points
    assert a.exact == sum(c.deviation == 0 for c in d.comparisons)
    # the most frequent limit first
    assert list(a.limits.items()) == [("ports", 5), ("descriptors", 1), ("server", 1)]
    assert data.agreement_counts([]) == data.Agreement(0, 0, 0, {})


# --- The frames the charts draw (moved here from tcplimits.report.charts) -----------------------

def test_per_client_sums_processes(data_dir):
    clients = render.load_dataset(data_dir)["clients"]
    seed = data.per_client(clients.filter(pl.col("run_id") == "seed-default"))
    assert sorted(seed["connections"].to_list()) == [28231, 28231]


DEFAULT_BACKLOG = FIELDS["backlog"].default  # a run without a recorded backlog had it


def test_server_gaps_count_the_models_accept_queue():
    runs = pl.DataFrame({"backlog": [8, None, 10_000, 8], "connections_total": [205, 10, 5, None],
                         "server_accepted": [196, 10, 5, 3]})
    gaps = data.server_gaps(runs)
    assert gaps["gap"].to_list() == [9, 0, 0]  # a run without both counts is left out
    assert gaps["queue"].to_list() == [
        model.accept_queue(8), model.accept_queue(DEFAULT_BACKLOG), model.accept_queue(10_000)]
    measured = data.server_gaps(runs.with_columns(somaxconn=pl.Series([4, None, 20_000, 1])))
    assert measured["queue"].to_list() == [
        model.accept_queue(8, 4), model.accept_queue(DEFAULT_BACKLOG), model.accept_queue(10_000, 20_000)]
    no_backlog = data.server_gaps(runs.drop("backlog").head(1))
    assert no_backlog["queue"].to_list() == [model.accept_queue(DEFAULT_BACKLOG)]


def test_port_count_of_an_unreadable_range_is_null():
    df = data.with_port_count(pl.DataFrame({"port_range": ["40000-40999", "nonsense", None]}))
    assert df["port_count"].to_list() == [1000, None, None]
