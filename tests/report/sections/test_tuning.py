"""The tuning table: one row per knob of the model, with the run set's values."""

from __future__ import annotations

import json

import polars as pl

from tcplimits.model import knobs
from tcplimits.report import render
from tcplimits.report.sections import tuning


def test_every_term_that_a_setting_bounds_has_a_knob_and_its_evidence():
    settings = knobs.terms() - knobs.NOT_SETTINGS
    assert settings <= {k.limit for k in knobs.KNOBS}
    assert {k.limit for k in knobs.KNOBS} <= set(tuning.EVIDENCE)


def test_rows_carry_the_run_sets_values():
    limits = json.dumps([{"setting": "fs.file-max", "value": 9_000_000, "needed": 10,
                          "stops_at": None, "errno": "ENFILE", "effect": "refused",
                          "command": None, "way_around": None, "why": "", "room": None}])
    runs = pl.DataFrame({"port_range": ["40000-40999", "32768-60999", None],
                         "nofile": [500, 15000, 15000], "backlog": [8, 4096, 4096],
                         "somaxconn": [4096, None, 4096], "host_limits": [limits, None, None]})
    rows = {r["setting"]: r for r in tuning.rows(runs, {"ports": 2}).iter_rows(named=True)}
    assert list(rows) == [k.setting for k in knobs.KNOBS]
    ports = rows["net.ipv4.ip_local_port_range"]
    assert ports["in this run set"] == "32768-60999, 40000-40999"
    assert ports["bound points"] == 2 and ports["evidence"] == "@sec-ports"
    assert ports["how to raise it"].startswith("--port-range LO-HI; on a host: sysctl -w")
    assert rows["RLIMIT_NOFILE (client)"]["in this run set"] == "500, 15,000"
    assert rows["listen() backlog, net.core.somaxconn"]["in this run set"] == (
        "backlog 8, 4,096; somaxconn 4,096")
    assert rows["fs.file-max"]["in this run set"] == "9,000,000"
    assert rows["net.netfilter.nf_conntrack_max"]["in this run set"] == "not recorded"


def test_the_table_is_markdown_with_escaped_cells_and_live_references():
    md = render.markdown_table(tuning.rows(pl.DataFrame({"nofile": [1]})), raw={"evidence"})
    assert "net.ipv4.ip\\_local\\_port\\_range" in md and "| @sec-ports |" in md
    assert render.md_escape("@sec-x <b>|") == "\\@sec-x \\<b\\>\\|"
