"""What the report's "Churn" section shows, from the dataset (pure): one row per churn point
with what it sustained, what the model said and the verdict."""

from __future__ import annotations

import polars as pl


def label(closer: str, tw_reuse: int, rate: object, clients: int = 1) -> str:
    """A churn point in words: "client closes, tw_reuse 0, 200/s"."""
    pace = "max" if rate in (None, "max") else f"{int(rate):,}/s"
    who = f"{closer} closes" if closer else "?"
    return f"{who}, tw_reuse {tw_reuse}, {pace}" + (f", {clients} clients" if clients > 1 else "")


def churn_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The finished churn runs, slowest pace first within each closer/reuse pair."""
    if "mode" not in runs.columns:
        return runs.clear()
    return runs.filter((pl.col("mode") == "churn") & (pl.col("status") == "ok"))


def labels(runs: pl.DataFrame) -> dict[str, str]:
    """run id -> point label, for the finished churn runs (repetitions keep their id)."""
    out = {}
    for r in churn_runs(runs).iter_rows(named=True):
        text = label(r["closer"], r["tw_reuse"], r["rate"], r.get("clients") or 1)
        if r.get("duration"):
            text += f", {r['duration']:g} s"
        out[r["run_id"]] = text if text not in out.values() else f"{text} ({r['run_id']})"
    return out


def points(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per finished churn point: asked, sustained, the model's bound and stop, and
    the verdict."""
    names = labels(runs)
    rows = []
    for r in churn_runs(runs).iter_rows(named=True):
        stopped = r.get("churn_stopped_at_s") is not None
        rows.append({
            "run_id": r["run_id"],
            "point": names[r["run_id"]],
            "asked": "max" if r["rate"] in (None, "max") else f"{int(r['rate']):,}/s",
            "sustained": r.get("churn_rate"),
            "model_bound": r.get("churn_predicted_rate"),
            "connections": r.get("churn_connections"),
            "outcome": (r.get("churn_stop_error") or "error") if stopped else "DURATION",
            "stopped_at_s": r.get("churn_stopped_at_s"),
            "model_stop_after": r.get("churn_predicted_stop_after"),
            "model_stop_at_s": r.get("churn_predicted_stop_at_s"),
            "agrees": r.get("churn_agrees"),
            "verdict": r.get("churn_verdict"),
        })
    schema = {"run_id": pl.Utf8, "point": pl.Utf8, "asked": pl.Utf8, "sustained": pl.Float64,
              "model_bound": pl.Float64, "connections": pl.Int64, "outcome": pl.Utf8,
              "stopped_at_s": pl.Float64, "model_stop_after": pl.Int64,
              "model_stop_at_s": pl.Float64, "agrees": pl.Boolean, "verdict": pl.Utf8}
    return pl.DataFrame(rows, schema=schema, orient="row")


def is_churn(runs: pl.DataFrame) -> pl.Series:
    """Per run: mode churn (a dataset from before mode existed is all hold)."""
    if "mode" not in runs.columns:
        return pl.Series([False] * runs.height, dtype=pl.Boolean)
    return runs["mode"].fill_null("hold") == "churn"


def hold_only(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The dataset's tables without the churn runs: the sections about held connections
    judge held connections only."""
    runs = tables["runs"]
    churn_ids = runs.filter(is_churn(runs))["run_id"].to_list()
    return {name: (df.filter(~pl.col("run_id").is_in(churn_ids)) if "run_id" in df.columns
                   else df) for name, df in tables.items()}


def summary(points_frame: pl.DataFrame) -> dict[str, int]:
    """Counts for the section's prose: points, as predicted, stopped, ran through."""
    return {
        "points": points_frame.height,
        "agree": int(points_frame["agrees"].fill_null(False).sum()) if points_frame.height else 0,
        "stopped": points_frame.filter(pl.col("outcome") != "DURATION").height,
        "ran": points_frame.filter(pl.col("outcome") == "DURATION").height,
    }
