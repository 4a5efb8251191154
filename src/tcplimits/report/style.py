"""What every chart of the report shares: its colours, scales, interactions and names.

One colour per outcome and per limit, the same in every chart; log scales padded so that a
point on the domain's edge is drawn whole; zoom and pan on continuous axes; points named by
their label (report/labels.py) with the run id kept in the tooltip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import polars as pl

from tcplimits.model import churn

# Every errno (or stop reason) a point can end with that the model predicts, its own colour:
# EADDRINUSE (bind()'s pool) is not "none"'s grey.
ERRNO_COLORS = {
    "EADDRNOTAVAIL": "#4c78a8",   # ports ran out (connect())
    "EADDRINUSE": "#72b7b2",      # ports ran out (bind())
    "EMFILE": "#f58518",          # descriptors ran out
    "ETIMEDOUT": "#e45756",       # SYN dropped: server queue or conntrack full
    "ECONNREFUSED": "#b279a2",
    "ENFILE": "#9d755d",          # the host's descriptors ran out
    "ENOMEM": "#ff9da6",
    "MAX_CONNECTIONS": "#54a24b",  # the process's own bound
    churn.DURATION: "#88d27a",    # churn: ran its full duration
    "none": "#bab0ac",
}
UNKNOWN_COLOR = "#999999"
LIMIT_COLORS = {
    "ports": "#4c78a8",
    "descriptors": "#f58518",
    "server": "#e45756",
    "conntrack": "#72b7b2",
    "max_connections": "#54a24b",
}
# Padded: a dot on the domain's edge (a count of exactly 1,000 on a 1k-100k axis) is whole.
LOG = alt.Scale(type="log", padding=8)
COUNT_AXIS = alt.Axis(format="~s")  # 1k, 10k: log axes of counts stay readable
NAME_AXIS = alt.Axis(labelLimit=360)
POINT = "point"


def color_scale(colors: Mapping[str, str], present: pl.Series | None = None) -> alt.Scale:
    """A fixed colour scale; names not in ``colors`` get grey."""
    names = list(colors)
    if present is not None:
        seen = set(present.drop_nulls().to_list())
        names = [n for n in names if n in seen] + sorted(seen - set(names))
    return alt.Scale(domain=names, range=[colors.get(n, UNKNOWN_COLOR) for n in names])


def zoom(*encodings: str) -> alt.Parameter:
    """Zoom (wheel) and pan (drag) bound to the continuous axes ``encodings`` (x and y when
    none are named); a double click resets them."""
    return alt.selection_interval(bind="scales", encodings=list(encodings or ("x", "y")))


def named(chart: alt.TopLevelMixin, name: str) -> alt.TopLevelMixin:
    # usermeta travels with the spec: the renderer names the chart's container after it.
    return chart.properties(usermeta={"tcplimits": {"chart": name}})


def with_points(df: pl.DataFrame, labels: Mapping[str, str] | None) -> pl.DataFrame:
    """``df`` with ``point``: its run's label (report/labels.py), the run id where it has none."""
    if "run_id" not in df.columns:
        return df
    if not labels:
        return df.with_columns(pl.col("run_id").alias(POINT))
    return df.with_columns(pl.col("run_id").replace_strict(
        dict(labels), default=pl.col("run_id"), return_dtype=pl.Utf8).alias(POINT))


def tip(*fields: str) -> list[str]:
    """A tooltip: the point's name first, the given fields, the run id last."""
    return [POINT, *fields, "run_id"]


def columns(count: int, most: int = 3) -> int:
    """Columns for ``count`` wrapped panels: ``most``, fewer when there are fewer panels."""
    return max(1, min(count, most))


def short_panel(values: Sequence[tuple[str, object]]) -> str:
    """A facet's title from its values: (("client", 2), ("proc", 1)) -> "2 clients, 1 proc"."""
    return ", ".join(f"{v} {word}{'' if v == 1 else 's'}" for word, v in values)
