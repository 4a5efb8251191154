"""The ceiling rung in "One host, one million" (issue 22), from run records as the engine
writes them: the resolution the run recorded, what it held, the rung against every limit."""

import polars as pl

from tcplimits.config.params import RunParams
from tcplimits.model import ceiling as model
from tcplimits.report import findings
from tcplimits.report.sections import ceiling as section
from tcplimits.report.sections import million
from tests.report.sections.test_million import HOST, RUNS, data, record, runs_frame

LAYOUT = dict(network="loopback", clients=7, procs=10, connections="ceiling")


def ceiling_record(held, connect_s=80.0):
    asked = RunParams(port_range="1024-65535", nofile=20000, **LAYOUT)
    run, resolution = model.resolve(asked, HOST, 20000)
    rec = record("ceiling", held, connect_s, 5000, 0, network="loopback", clients=7, procs=10,
                 max_connections=run.max_connections)
    rec["params"] = run.to_dict()
    rec["ceiling"] = resolution
    return rec, resolution


def test_the_ceiling_rung_is_said_against_every_limit():
    rec, res = ceiling_record(1_200_000)
    runs = runs_frame([rec])
    assert section.ceiling_runs(runs)["run_id"].to_list() == ["ceiling"]
    row = runs.row(0, named=True)
    assert row["connections"] == res["connections"]  # the resolved number, in the dataset
    text = section.ceiling_sentence(row)
    n = res["connections"]
    assert f"**{n:,}**" in text and "`fs.file-max`" in text and "`layout: descriptors`" in text
    assert f"{1_200_000 / n:.2%}" in text and "its share" in text
    table = section.bounds_table(row)
    assert table["limit"].to_list()[0] == "fs.file-max"
    assert table["how to raise it"][0].startswith("sysctl -w fs.file-max=")
    assert "never reached" in table["when reached"][0]
    assert [r["limit"] for r in section.ceiling_rules(row)] == table["limit"].to_list()


def test_the_section_shows_the_rung_and_the_rate_of_the_top_rungs():
    rec, _ = ceiling_record(1_200_000, connect_s=100.0)
    runs = pl.concat([RUNS, runs_frame([rec])], how="vertical_relaxed")
    said = findings.one_million(data(runs)).text()
    assert "The ceiling rung" in said and "held / allowed" in said
    assert "Connect rate on loopback, rung by rung" in said and "1,200,000: 12,000/s" in said


def test_runs_without_a_ceiling_have_no_ceiling_rung():
    assert section.ceiling_runs(RUNS).is_empty()
    assert section.rate_sentence(RUNS.filter(pl.col("run_id") == "small")) is None


def test_the_rate_sentence_says_why_the_top_rung_is_suspect():
    """A top rung whose server dropped SYNs at its accept queue (each a connect() waiting a
    1 s retransmit) is slower for that reason: the sentence says it, escaped."""
    rec, _ = ceiling_record(1_200_000, connect_s=100.0)
    rec.update(noisy=True, noisy_reason="the server dropped 358 SYNs at its accept queue *x*")
    runs = pl.concat([RUNS, runs_frame([rec])], how="vertical_relaxed")
    said = section.rate_sentence(million.ladder_runs(runs))
    assert said is not None
    assert "marked suspect: the server dropped 358 SYNs at its accept queue \\*x\\*" in said
