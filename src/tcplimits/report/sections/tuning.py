"""The tuning table: every setting that bounds a result, side by side (model/knobs.py), with
its values in this run set and the section that shows its evidence."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from tcplimits.model import churn, hostlimits, knobs
from tcplimits.report import render
from tcplimits.report.blocks import Blocks
from tcplimits.report.data import Data, agreement_counts
from tcplimits.model.hold import CONNTRACK, DESCRIPTORS, PORTS, SERVER

# Where the report shows each term binding (section ids of report.qmd).
EVIDENCE = {PORTS: "sec-ports", DESCRIPTORS: "sec-outcomes", SERVER: "sec-server",
            CONNTRACK: "sec-million", hostlimits.FILE_MAX: "sec-million",
            churn.TIME_WAIT: "sec-churn", churn.REUSE_DELAY: "sec-churn"}
MAX_VALUES = 4


def _values(series: pl.Series) -> str:
    """Distinct values, smallest first: "8, 4,096"; "none set" when every one is null."""
    values = [v for v in series.drop_nulls().unique().to_list()]
    if not values:
        return ""
    values.sort(key=lambda v: (isinstance(v, str), v))
    shown = [f"{v:,}" if isinstance(v, int) else str(v) for v in values]
    if len(shown) > MAX_VALUES:
        return f"{shown[0]} … {shown[-1]} ({len(shown)} values)"
    return ", ".join(shown)


def recorded_host_value(runs: pl.DataFrame, setting: str) -> str:
    """A host setting's value as the runs recorded it (runs.host_limits)."""
    if "host_limits" not in runs.columns:
        return ""
    found = {lim.value for text in runs["host_limits"].drop_nulls().to_list()
             for lim in hostlimits.from_record(text) if lim.setting == setting
             and lim.value is not None}
    return _values(pl.Series(sorted(found), dtype=pl.Int64)) if found else ""


def value_in(runs: pl.DataFrame, knob: knobs.Knob) -> str:
    """The knob's values over the run set: "port_range 40000-40999, 40000-44999"; a column
    the runs lack or leave null is left out; "not recorded" when none says."""
    parts = []
    for column in knob.columns:
        if column in runs.columns and (text := _values(runs[column])):
            parts.append(f"{column} {text}" if len(knob.columns) > 1 else text)
    if not knob.columns and (text := recorded_host_value(runs, knob.setting)):
        parts.append(text)
    return "; ".join(parts) or "not recorded"


def rows(runs: pl.DataFrame, binding: Mapping[str, int] | None = None) -> pl.DataFrame:
    """One row per knob: setting, what it bounds, its value here, the errno, how to raise it
    (flag, then on a host), how many points it bound (``binding``: limit -> points), and the
    section with the evidence (an ``@sec-`` reference)."""
    binding = binding or {}
    out = []
    for knob in knobs.KNOBS:
        how = f"{knob.flag}; on a host: {knob.raise_with}" if knob.flag else knob.raise_with
        out.append({"setting": knob.setting, "bounds": knob.bounds,
                    "in this run set": value_in(runs, knob), "stops with": knob.errno or "–",
                    "bound points": binding.get(knob.limit, 0), "how to raise it": how,
                    "evidence": f"@{EVIDENCE[knob.limit]}" if knob.limit in EVIDENCE else "–"})
    return pl.DataFrame(out, schema={"setting": pl.Utf8, "bounds": pl.Utf8,
                                     "in this run set": pl.Utf8, "stops with": pl.Utf8,
                                     "bound points": pl.Int64, "how to raise it": pl.Utf8,
                                     "evidence": pl.Utf8})


def tuning(d: Data) -> Blocks:
    """The tuning table, with how many of the run set's points each term bound."""
    bound = agreement_counts(d.comparisons).limits if d.comparisons else {}
    if not d.churn_runs.is_empty() and "churn_predicted_limit" in d.churn_runs.columns:
        for limit in d.churn_runs["churn_predicted_limit"].drop_nulls().to_list():
            bound[limit] = bound.get(limit, 0) + 1
    return Blocks().md(render.markdown_table(rows(d.every, bound), raw={"evidence"}))
