"""What a reader takes away: a CSV beside each table, and the data dictionary from the schemas."""

from __future__ import annotations

import sys
import types

import polars as pl

from tests.report.fixtures import synthetic_dataset
from tcplimits.report import downloads, render
from tcplimits.results import dataset


def test_the_dictionary_describes_every_column_of_every_table():
    d = downloads.dictionary()
    for table in dataset.TABLE_NAMES:
        rows = d.filter(pl.col("table") == table)
        assert rows["column"].to_list() == list(dataset.SCHEMAS[table]), table
        assert rows["type"].to_list() == [str(t) for t in dataset.SCHEMAS[table].values()]
    blank = d.filter(pl.col("description").str.strip_chars() == "")
    assert blank.is_empty(), f"columns without a comment in their schema: {blank.rows()}"


def test_descriptions_are_the_schemas_comments():
    d = {(t, c): doc for t, c, _, doc in downloads.dictionary().iter_rows()}
    assert d[("runs", "somaxconn")].startswith("net.core.somaxconn measured")
    assert d[("runs", "held_sockets")].endswith("{client: [{addr, port, state, owner}]}")
    assert d[("runs", "nofile")].startswith("parameter: RLIMIT_NOFILE")
    assert d[("runs", "churn_rate")] == "mode churn: measured: connections per second sustained"
    assert d[("clients", "cpu_s")].endswith("not lengthened by other load on the machine")
    assert d[("series", "nofile")].startswith("(from runs) parameter: RLIMIT_NOFILE")


def test_schema_comments_continue_only_in_their_own_column(monkeypatch):
    source = '''
S = {
    "a": int,      # first line
                   # and its continuation
    # a heading for what follows, not a continuation
    "b": int,      # b
    "c": int,
}
'''
    module = types.ModuleType("fake_schema_module")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(downloads.inspect, "getsource", lambda m: source)
    downloads.schema_docs.cache_clear()
    try:
        assert downloads.schema_docs(module, "S") == {
            "a": "first line and its continuation", "b": "b", "c": ""}
    finally:
        downloads.schema_docs.cache_clear()


def test_a_csv_beside_each_parquet_file_and_nothing_else_touched(tmp_path):
    data = render.copy_dataset(synthetic_dataset(tmp_path / "ds"), tmp_path / "data")
    (data / "notes.txt").write_text("mine")
    written = downloads.write_csvs(data)
    assert sorted(p.name for p in written) == sorted(
        [f"{t}.csv" for t in dataset.TABLE_NAMES] + [downloads.DICTIONARY_FILE])
    for table in dataset.TABLE_NAMES:
        parquet = pl.read_parquet(data / f"{table}.parquet")
        csv = pl.read_csv(data / f"{table}.csv", infer_schema=False)
        assert csv.columns == parquet.columns and csv.height == parquet.height
    runs = pl.read_csv(data / "runs.csv", infer_schema=False)
    lists = runs.filter(pl.col("predicted_per_client").str.contains(";"))
    assert not lists.is_empty()  # a list column reads "a; b"
    assert (data / "notes.txt").read_text() == "mine"
