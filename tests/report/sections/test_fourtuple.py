"""The report's 4-tuple sections: selection and wording from dataset frames (pure)."""

from __future__ import annotations

import polars as pl

from tests.report.fixtures import assert_tooltips
from tcplimits.report import charts
from tcplimits.report.data import Data
from tcplimits.report.sections import fourtuple as tf

POOL = 1000


def _run(run_id, connections, mode="connect", ports=1, addrs=1, sources=1, clients=1,
         limit="ports"):
    return {"run_id": run_id, "status": "ok", "clients": clients, "port_count": POOL,
            "bind_mode": mode, "server_ports": ports, "server_addrs": addrs,
            "client_addrs": sources, "connections_total": connections,
            "predicted_total": connections, "predicted_limit": limit}


RUNS = pl.DataFrame([
    _run("base", 999),
    _run("addrs2", 1998, addrs=2),
    _run("ports4", 3996, ports=4),
    _run("bind-ports4", 1000, mode="bind", ports=4),
    _run("bind-src2", 2000, mode="bind", sources=2),
    _run("bnp-src2", 1998, mode="bind-no-port", sources=2),
    _run("plain-src2", 999, sources=2),
    _run("three-clients", 2997, clients=3),
    _run("nofile", 497, limit="descriptors"),
])
ERRNO = {"bind-ports4": "EADDRINUSE", "bind-src2": "EADDRINUSE"}
CLIENTS = pl.DataFrame([{"run_id": r, "error": ERRNO.get(r, "EADDRNOTAVAIL")}
                        for r in RUNS["run_id"]])


def test_points_are_port_bound_single_client_runs_with_their_space():
    p = tf.tuple_points(RUNS, CLIENTS)
    assert set(p["run_id"]) == set(RUNS["run_id"]) - {"three-clients", "nofile"}
    row = p.filter(pl.col("run_id") == "ports4").row(0, named=True)
    assert (row["space"], row["per_address"], row["errno"]) == (4000, 3996, "EADDRNOTAVAIL")
    assert p.filter(pl.col("run_id") == "bind-src2")["per_address"][0] == 1000


def test_older_datasets_without_tuple_columns_load_with_defaults():
    old = RUNS.drop("bind_mode", "server_ports", "server_addrs", "client_addrs").head(1)
    p = tf.tuple_points(old, CLIENTS)
    assert p.row(0, named=True)["bind_mode"] == "connect" and p["space"][0] == POOL


def test_member_sentences_carry_the_measured_numbers():
    text = "\n".join(tf.member_sentences(tf.tuple_points(RUNS, CLIENTS)))
    assert "999 connections of a 1,000-port pool" in text
    assert "4 server ports: 3,996" in text and "2 server addresses: 1,998" in text
    assert "With bind" in text and "EADDRINUSE" in text
    # A mode measured only with extra members still names its errno.
    only_bind = RUNS.filter(pl.col("run_id") == "bind-ports4")
    (sentence,) = tf.member_sentences(tf.tuple_points(only_bind, CLIENTS))
    assert sentence == "With bind: 4 server ports: 1,000 — stopped by EADDRINUSE."


def test_book_claim_from_the_data():
    claim = tf.claim_sentences(tf.tuple_points(RUNS, CLIENTS), RUNS)
    text = "\n".join(claim)
    assert "2 server addresses lift it to 1,998, 2.0 times" in text
    assert "4 server ports on one address give 3,996" in text
    assert "2 source addresses, 1,998 connections" in text
    assert "still holds 999" in text
    assert "1 server address(es) x 4 port(s) still give 1,000, stopped by EADDRINUSE" in text
    assert "3 client containers held 2,997" in text


def test_book_claim_leaves_out_what_was_not_measured():
    only_base = RUNS.filter(pl.col("run_id") == "base")
    assert tf.claim_sentences(tf.tuple_points(only_base, CLIENTS), only_base) == []
    assert tf.claim_sentences(pl.DataFrame()) == []


def test_chart_draws_from_the_points():
    chart = charts.tuple_space(tf.chart_frame(tf.tuple_points(RUNS, CLIENTS)))
    spec = chart.to_dict()
    assert spec["usermeta"]["tcplimits"]["chart"] == "tuple_space"
    assert_tooltips(spec)
    html = charts.to_html(chart)
    assert "<svg" in html


def test_the_sections_lay_out_the_points():
    empty = pl.DataFrame()
    d = Data(RUNS, CLIENTS, empty, empty)
    members = tf.tuple_members(d)
    assert members.kinds()[0] == "chart" and "4 server ports: 3,996" in members.text()
    assert "2 server addresses lift it to 1,998" in tf.book_claim(d).text()
    base_only = RUNS.filter(pl.col("run_id") == "base")
    d = Data(base_only, CLIENTS, empty, empty)
    assert "No point of this sweep varies the 4-tuple" in tf.tuple_members(d).text()
    assert "no point that tests the claim" in tf.book_claim(d).text()
