"""The dataset as the report reads it: ``Data`` (the tables and every finished run set against
the model) and the frames the sections and the charts share, shaped once here.

Pure functions of polars frames; the formulas they apply (the accept queue, port counts,
tolerances) are tcplimits.model's and tcplimits.config.params'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from tcplimits import model
from tcplimits.config.params import FIELDS, ParamError, RunParams
from tcplimits.report import render
from tcplimits.report.labels import point_labels, with_labels
from tcplimits.results import STATUS_FAILED, STATUS_OK, STATUS_UNSUPPORTED


def is_churn(runs: pl.DataFrame) -> pl.Series:
    """Per run: mode churn (a dataset from before mode existed is all hold)."""
    if "mode" not in runs.columns:
        return pl.Series([False] * runs.height, dtype=pl.Boolean)
    return runs["mode"].fill_null("hold") == "churn"


@dataclass(frozen=True)
class Data:
    """The dataset's tables and every finished run set against the model. ``runs``,
    ``clients``, ``server`` and ``series`` hold the points of mode hold (the connections held);
    ``churn_runs`` and ``churn`` the points of mode churn (section 13)."""

    runs: pl.DataFrame
    clients: pl.DataFrame
    server: pl.DataFrame
    series: pl.DataFrame
    churn_runs: pl.DataFrame = field(default_factory=pl.DataFrame)
    churn: pl.DataFrame = field(default_factory=pl.DataFrame)
    realserver: pl.DataFrame = field(default_factory=pl.DataFrame)  # real servers, issue 21

    @classmethod
    def of(cls, tables: Mapping[str, pl.DataFrame]) -> "Data":
        runs = tables["runs"]
        churn_ids = runs.filter(is_churn(runs))["run_id"].to_list()

        def hold(df: pl.DataFrame) -> pl.DataFrame:
            return df.filter(~pl.col("run_id").is_in(churn_ids)) if "run_id" in df.columns else df

        return cls(hold(runs), hold(tables["clients"]), hold(tables["server"]),
                   hold(tables["series"]), runs.filter(is_churn(runs)),
                   tables.get("churn", pl.DataFrame()),
                   tables.get("realserver", pl.DataFrame()))

    @cached_property
    def comparisons(self) -> list[model.Comparison]:
        return model.compare_runs(self.ok.to_dicts(), self.clients.to_dicts(),
                                  self.server.to_dicts())

    @cached_property
    def by_id(self) -> dict[str, model.Comparison]:
        return {c.run_id: c for c in self.comparisons}

    @cached_property
    def every(self) -> pl.DataFrame:
        """Every point, hold and churn: for what the run set is, where it ran, and which
        points produced no measurement."""
        if self.churn_runs.is_empty():
            return self.runs
        return pl.concat([self.runs, self.churn_runs], how="diagonal_relaxed")

    @cached_property
    def labels(self) -> dict[str, str]:
        """run id -> the point's name (report/labels.py), for every point of the run set."""
        return point_labels(self.every)

    def name(self, run_id: str) -> str:
        """A point's name (its run id where it has none), as plain text."""
        return self.labels.get(run_id, run_id)

    def named(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with its run_id column as "point" first and "run id" last."""
        if "run_id" not in df.columns:
            return df
        return (with_labels(df, self.labels).rename({"run_id": "run id"})
                .select(pl.exclude("run id"), "run id"))

    @property
    def ok(self) -> pl.DataFrame:
        return self.runs.filter(pl.col("status") == STATUS_OK)

    @property
    def unfinished(self) -> pl.DataFrame:
        """Points of either mode that produced no measurement."""
        return self.every.filter(pl.col("status") != STATUS_OK)


# Control characters (a terminal escape, a bell) in a string from the data: nothing a page can
# show, and the chart renderer's text measuring aborts on some of them.
_CONTROL = r"[\x00-\x08\x0b-\x1f\x7f]"


def printable(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Every string column without control characters."""
    return {name: df.with_columns(pl.col(pl.Utf8).str.replace_all(_CONTROL, ""))
            for name, df in frames.items()}


def load(data_dir: str | Path) -> Data:
    """The dataset directory the report reads (``render.load_dataset``) as ``Data``, its
    strings printable."""
    return Data.of(printable(render.load_dataset(data_dir)))


# --- Values of a frame ------------------------------------------------------------------------

def values(df: pl.DataFrame, column: str) -> list:
    """Distinct non-null values of a column, in order (numbers as numbers where a column mixes
    them with words: rate 25, 400, max)."""
    if column not in df.columns or df.is_empty():
        return []
    return sorted((v for v in df[column].unique().to_list() if v is not None), key=_in_order)


def _in_order(value: Any) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def span(numbers: Iterable[int]) -> str:
    """'28,231', or '14,000 – 28,231' when the numbers differ; a dash for none."""
    numbers = list(numbers)
    if not numbers:
        return "–"
    lo, hi = min(numbers), max(numbers)
    return f"{lo:,}" if lo == hi else f"{lo:,} – {hi:,}"


def status_counts(runs: pl.DataFrame) -> dict[str, int]:
    return {s: runs.filter(pl.col("status") == s).height
            for s in (STATUS_OK, STATUS_FAILED, STATUS_UNSUPPORTED)}


def most_accepted(runs: pl.DataFrame) -> dict | None:
    """The finished run whose server accepted the most connections (a runs row), or None."""
    best = (runs.filter((pl.col("status") == STATUS_OK) & pl.col("server_accepted").is_not_null())
            .sort("server_accepted").tail(1))
    return best.row(0, named=True) if best.height else None


def noisy_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs whose times are suspect (a noisy host, dropped SYNs): run_id, noisy_reason."""
    if "noisy" not in runs.columns:  # a dataset from before the host was recorded
        return pl.DataFrame(schema={"run_id": pl.Utf8, "noisy_reason": pl.Utf8})
    return runs.filter(pl.col("noisy").fill_null(False)).select("run_id", "noisy_reason")


# --- The model's verdicts, counted --------------------------------------------------------------

def by_limit(comparisons: Iterable[model.Comparison], limit: str) -> list[model.Comparison]:
    return [c for c in comparisons if c.limit == limit]


@dataclass(frozen=True)
class Agreement:
    """How the finished hold points compare with their predictions."""

    points: int              # finished points compared
    within: int              # within the model's tolerance
    exact: int               # observed == predicted
    limits: dict[str, int]   # points per limiting term, the most frequent first


def agreement_counts(comparisons: Iterable[model.Comparison]) -> Agreement:
    comparisons = list(comparisons)
    limits: dict[str, int] = {}
    for c in comparisons:
        limits[c.limit] = limits.get(c.limit, 0) + 1
    return Agreement(points=len(comparisons),
                     within=sum(c.within_tolerance for c in comparisons),
                     exact=sum(c.deviation == 0 for c in comparisons),
                     limits=dict(sorted(limits.items(), key=lambda kv: -kv[1])))


# --- Frames shaped for the sections and the charts ----------------------------------------------

def ensure_columns(df: pl.DataFrame, **columns: pl.DataType) -> pl.DataFrame:
    """Add absent columns as nulls, so an older or partial dataset still draws and counts."""
    missing = {k: v for k, v in columns.items() if k not in df.columns}
    return df.with_columns(pl.lit(None, dtype=v).alias(k) for k, v in missing.items())


def with_port_count(df: pl.DataFrame) -> pl.DataFrame:
    """``port_count`` from ``port_range`` where a frame lacks it, counted by the parameters."""
    if "port_count" in df.columns or "port_range" not in df.columns:
        return df
    counts = {}
    for port_range in df["port_range"].drop_nulls().unique().to_list():
        try:
            counts[port_range] = RunParams(port_range=port_range).port_count
        except ParamError:  # an unreadable range draws as unknown
            counts[port_range] = None
    return df.with_columns(port_count=pl.col("port_range").replace_strict(
        counts, default=None, return_dtype=pl.Int64))


def per_client(clients: pl.DataFrame) -> pl.DataFrame:
    """Client-process rows -> one row per client container (its processes' connections summed)."""
    df = ensure_columns(with_port_count(clients), port_count=pl.Int64, nofile=pl.Int64,
                        procs=pl.Int64, clients=pl.Int64)
    return (df.group_by("run_id", "client", maintain_order=True)
            .agg(pl.col("connections").sum(),
                 pl.col("port_count", "nofile", "procs", "clients").first()))


def client_counts(clients: pl.DataFrame, run_ids: Iterable[str]) -> list[int]:
    """Connections per client container (its processes summed) for these runs."""
    sel = clients.filter(pl.col("run_id").is_in(list(run_ids)))
    return per_client(sel)["connections"].to_list() if not sel.is_empty() else []


def server_gaps(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs whose server and clients both counted, with ``gap`` (connections the clients
    hold that the server had not accepted) and ``queue``: the accept queue that can hold them
    (``model.accept_queue`` of the backlog, its default where null, and of the measured
    somaxconn where the runs record one)."""
    default = FIELDS["backlog"].default
    has_somaxconn = "somaxconn" in runs.columns

    def queue(row: dict) -> int:
        backlog = default if row["backlog"] is None else row["backlog"]
        if has_somaxconn and row["somaxconn"] is not None:
            return model.accept_queue(backlog, row["somaxconn"])
        return model.accept_queue(backlog)

    columns = ["backlog", *(["somaxconn"] if has_somaxconn else [])]
    return ensure_columns(runs, backlog=pl.Int64).filter(
        pl.col("connections_total").is_not_null() & pl.col("server_accepted").is_not_null()
    ).with_columns(
        gap=pl.col("connections_total") - pl.col("server_accepted"),
        queue=pl.struct(columns).map_elements(queue, return_dtype=pl.Int64),
    )


def pool_fill(series: pl.DataFrame) -> pl.DataFrame:
    """Each progress sample with ``fill``: the share of its container's port range in use.

    The processes of one container share its pool, so a sample counts every process's last
    count at that time (t_s runs from the common start signal), not only its own."""
    df = with_port_count(series)
    if df.is_empty():
        return df.with_columns(fill=pl.lit(None, dtype=pl.Float64))
    keys = ["run_id", "client"]
    others = (df.select(*keys, pl.col("proc").alias("other"), "t_s",
                        pl.col("connections").alias("held"))
              .sort("t_s"))
    peers = df.select(*keys, pl.col("proc").alias("other")).unique()
    pooled = (df.with_row_index("_row").join(peers, on=keys).sort("t_s")
              .join_asof(others, on="t_s", by=[*keys, "other"], strategy="backward",
                         check_sortedness=False)  # both sides sorted by t_s above
              .group_by("_row").agg(pl.col("held").fill_null(0).sum().alias("_pool")))
    return (df.with_row_index("_row").join(pooled, on="_row", how="left").sort("_row")
            .with_columns(fill=pl.min_horizontal(pl.col("_pool") / pl.col("port_count"),
                                                 pl.lit(1.0)))
            .drop("_row", "_pool"))
