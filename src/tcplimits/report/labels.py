"""Names for points: one label per run, for every axis, legend and table of the report.

A point is named by the parameters in which it differs from the sweep's common values (each
parameter's most frequent value over the run set): "ports 40000-44999, nofile 300",
"churn, client closes, tw_reuse 1, 400/s, 5 s", "loopback, 8 clients". The common values
themselves are said once (``common_values``), so a label stays short and every label of a
sweep is different: repetitions of one point get "#2", "#3", and a run whose parameters were
not recorded keeps its run id. The run id itself stays in tooltips and in a last column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import polars as pl

from tcplimits.config.params import FIELDS

# Reading order: what kind of point, then its pools and bounds, then the 4-tuple, then churn's
# knobs, then the run's own timings.
ORDER = ["mode", "network", "port_range", "nofile", "procs", "clients", "server_nofile",
         "server_workers", "backlog", "max_connections", "bind_mode", "server_ports",
         "server_addrs", "client_addrs", "closer", "tw_reuse", "tw_reuse_delay", "timestamps",
         "rate", "duration", "connect_timeout", "timeout", "quiet_host_timeout",
         "quiet_host_sockets"]
ORDER += [name for name in FIELDS if name not in ORDER]  # a field added later still counts
COMMON = "base point"  # the point with every common value


def _n(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, (int, float)) else str(value)


def _count(value: Any, one: str, many: str) -> str:
    return f"{_n(value)} {one if value == 1 else many}"


def _rate(value: Any) -> str:
    return "max rate" if value in (None, "max") else f"{_n(float(value))}/s"


# How each parameter reads in a label; None for a value means the engine's or kernel's default.
WORDS = {
    "mode": lambda v: str(v),
    "network": lambda v: str(v),
    "port_range": lambda v: f"ports {v}",
    "nofile": lambda v: f"nofile {_n(v)}",
    "procs": lambda v: _count(v, "proc", "procs"),
    "clients": lambda v: _count(v, "client", "clients"),
    "server_nofile": lambda v: ("server nofile at the cap" if v is None
                                else f"server nofile {_n(v)}"),
    "server_workers": lambda v: (f"{v} server workers" if v in (None, "auto")
                                 else _count(int(v), "server worker", "server workers")),
    "backlog": lambda v: f"backlog {_n(v)}",
    "max_connections": lambda v: ("no max" if v is None else f"max {_n(v)} per proc"),
    "bind_mode": lambda v: str(v),
    "server_ports": lambda v: _count(v, "server port", "server ports"),
    "server_addrs": lambda v: _count(v, "server address", "server addresses"),
    "client_addrs": lambda v: _count(v, "client address", "client addresses"),
    "closer": lambda v: f"{v} closes",
    "tw_reuse": lambda v: f"tw_reuse {_n(v)}",
    "tw_reuse_delay": lambda v: ("default reuse delay" if v is None
                                 else f"reuse after {_n(v)} ms"),
    "timestamps": lambda v: ("default timestamps" if v is None else f"timestamps {_n(v)}"),
    "rate": _rate,
    "duration": lambda v: f"{_n(v)} s",
    "connect_timeout": lambda v: f"connect timeout {_n(v)} s",
    "timeout": lambda v: f"timeout {_n(v)} s",
    "quiet_host_timeout": lambda v: f"quiet wait {_n(v)} s",
    "quiet_host_sockets": lambda v: f"quiet below {_n(v)} sockets",
}


def words(name: str, value: Any) -> str:
    """One parameter's value as a label says it."""
    return WORDS.get(name, lambda v: f"{name} {_n(v)}")(value)


def common_values(runs: pl.DataFrame) -> dict[str, Any]:
    """Each parameter's most frequent value over the run set (the first seen on a tie)."""
    out = {}
    for name in ORDER:
        if name in runs.columns and not runs.is_empty():
            counts = Counter(runs[name].to_list())
            out[name] = max(counts, key=lambda v: counts[v])  # first seen wins a tie
    return out


def varied(runs: pl.DataFrame) -> list[str]:
    """The parameters that take more than one value in the run set, in reading order."""
    return [name for name in ORDER if name in runs.columns
            and runs.select(pl.col(name).n_unique()).item() > 1]


def label(run: Mapping[str, Any], common: Mapping[str, Any], names: list[str]) -> str:
    """The point in words: its values of ``names`` that differ from ``common``."""
    parts = [words(name, run.get(name)) for name in names
             if name in run and run.get(name) != common.get(name)]
    return ", ".join(parts) or COMMON


def point_labels(runs: pl.DataFrame) -> dict[str, str]:
    """run id -> label, every run of ``runs`` (any status), unique within the run set."""
    if runs.is_empty() or "run_id" not in runs.columns:
        return {}
    common, names = common_values(runs), varied(runs)
    out: dict[str, str] = {}
    seen: Counter = Counter()
    for run in runs.iter_rows(named=True):
        text = label(run, common, names)
        seen[text] += 1
        if seen[text] > 1:
            text = f"{text} #{seen[text]}"
        if text in out.values():  # "x #2" taken by a point whose own label is "x #2"
            text = f"{text} ({run['run_id']})"
        out[run["run_id"]] = text
    return out


def with_labels(df: pl.DataFrame, labels: Mapping[str, str], *, column: str = "point") -> pl.DataFrame:
    """``df`` with ``column`` (the label of its run_id; the run id where none) first."""
    if "run_id" not in df.columns:
        return df
    named = df.with_columns(pl.col("run_id").replace_strict(
        dict(labels), default=pl.col("run_id"), return_dtype=pl.Utf8).alias(column))
    return named.select(column, pl.exclude(column))


def common_sentence(runs: pl.DataFrame) -> str:
    """The values a label leaves out, said once: "Unless its label says otherwise, a point
    has ports 32768-60999, nofile 15,000, 1 client, ...". Only the parameters that vary."""
    names = varied(runs)
    if not names:
        return ""
    common = common_values(runs)
    return ("Points are named by what differs from the sweep's common values: "
            + ", ".join(words(n, common.get(n)) for n in names) + ".")
