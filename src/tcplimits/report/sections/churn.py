"""Section 13, "Churn": each finished churn point in words, against the model, and what
binds a churn point (pure functions of the dataset's frames); ``churn`` lays the section out.
The model and its verdict are tcplimits.model.churn's, recorded by each run.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from tcplimits.model import churn as churn_model
from tcplimits.report import charts, render
from tcplimits.report.blocks import Blocks, plural
from tcplimits.report.data import Data
from tcplimits.report.labels import point_labels
from tcplimits.results import STATUS_OK


def churn_labels(churn_runs: pl.DataFrame,
                 labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """run id -> point name (report/labels.py: of the whole run set where ``labels`` are
    given, else of the churn runs), for the finished churn runs."""
    names = labels if labels is not None else point_labels(churn_runs)
    return {r: names.get(r, r) for r in
            churn_runs.filter(pl.col("status") == STATUS_OK)["run_id"].to_list()}


CHURN_POINTS_SCHEMA = {
    "run_id": pl.Utf8, "point": pl.Utf8, "asked": pl.Utf8, "sustained": pl.Float64,
    "model_bound": pl.Float64, "connections": pl.Int64, "outcome": pl.Utf8,
    "stopped_at_s": pl.Float64, "model_stop_after": pl.Int64, "model_stop_at_s": pl.Float64,
    "agrees": pl.Boolean, "verdict": pl.Utf8,
}


def churn_points(churn_runs: pl.DataFrame,
                 labels: Mapping[str, str] | None = None) -> pl.DataFrame:
    """One row per finished churn point: asked, sustained, the model's bound and stop, and
    the verdict (``churn_model.verdict``, recorded by the run)."""
    if churn_runs.is_empty():  # no churn point (or a Data built without the churn tables)
        return pl.DataFrame(schema=CHURN_POINTS_SCHEMA)
    names = churn_labels(churn_runs, labels)
    rows = []
    for r in churn_runs.filter(pl.col("status") == STATUS_OK).iter_rows(named=True):
        stopped = r.get("churn_stopped_at_s") is not None
        rows.append({
            "run_id": r["run_id"], "point": names[r["run_id"]],
            "asked": "max" if r["rate"] in (None, "max") else f"{int(r['rate']):,}/s",
            "sustained": r.get("churn_rate"), "model_bound": r.get("churn_predicted_rate"),
            "connections": r.get("churn_connections"),
            "outcome": (r.get("churn_stop_error") or "error") if stopped else churn_model.DURATION,
            "stopped_at_s": r.get("churn_stopped_at_s"),
            "model_stop_after": r.get("churn_predicted_stop_after"),
            "model_stop_at_s": r.get("churn_predicted_stop_at_s"),
            "agrees": r.get("churn_agrees"), "verdict": r.get("churn_verdict"),
        })
    return pl.DataFrame(rows, schema=CHURN_POINTS_SCHEMA, orient="row")


def churn_counts(points: pl.DataFrame) -> dict[str, int]:
    """Points, as predicted, stopped on an error, ran their duration."""
    return {
        "points": points.height,
        "agree": int(points["agrees"].fill_null(False).sum()) if points.height else 0,
        "stopped": points.filter(pl.col("outcome") != churn_model.DURATION).height,
        "ran": points.filter(pl.col("outcome") == churn_model.DURATION).height,
    }


def churn_answer(points: pl.DataFrame) -> str:
    """The conclusion's answer for churn, from the finished churn points (``churn_points``):
    what stopped the points that asked for more than their pool, and the fastest point that
    ran its duration; "" without churn points."""
    if points.is_empty():
        return ""
    c = churn_counts(points)
    said = ["**How fast can a client open and close connections?** As fast as its ports come "
            f"back: a port the client closed first stays {churn_model.TIME_WAIT_S:g} s in "
            f"TIME_WAIT ({churn_model.TW_REUSE_DELAY_S:g} s with tcp_tw_reuse=1), and every "
            "destination has a pool of ports of its own unless the client calls bind() first."]
    stopped = points.filter(pl.col("outcome") != churn_model.DURATION)
    if not stopped.is_empty():
        errnos = stopped.group_by("outcome").len().sort(["len", "outcome"],
                                                         descending=[True, False])
        said.append(f"{plural(stopped.height, 'point')} asked for more and stopped: "
                    + ", ".join(f"{n:,} with {e}" for e, n in errnos.iter_rows())
                    + f"; {churn_counts(stopped)['agree']:,} of them after the "
                    "count the model gave.")
    ran = points.filter(pl.col("outcome") == churn_model.DURATION)
    if not ran.is_empty():
        fastest = ran.sort("sustained", descending=True, nulls_last=True).row(0, named=True)
        said.append(f"{plural(ran.height, 'point')} ran their full duration, the fastest at "
                    f"{fastest['sustained'] or 0:,.0f}/s (*{render.md_escape(fastest['point'])}*).")
    said.append(f"{c['agree']:,} of {plural(c['points'], 'churn point')} ended as the model "
                "said (@sec-churn).")
    return " ".join(said)


def churn_mechanism() -> str:
    """What binds a churn point, with the kernel constants the model uses."""
    tw, delay = churn_model.TIME_WAIT_S, churn_model.TW_REUSE_DELAY_S
    return (f"On this kernel TIME_WAIT lasts **{tw:g} s** (`TCP_TIMEWAIT_LEN`, compiled in: no "
            f"sysctl changes it). So a pool of R ports sustains R / {tw:g} connections per second "
            f"per destination when the client closes first; faster, it stops after R connections "
            f"with EADDRNOTAVAIL. `net.ipv4.tcp_tw_reuse=1` (per namespace, TCP timestamps "
            f"needed) lets connect() take a TIME_WAIT port once it is {delay:g} s old "
            f"(`tcp_tw_reuse_delay`): R / {delay:g} s. When the server closes first, TIME_WAIT "
            "stays on the server and the client's ports come back at once: nothing in the kernel "
            "stops the client, its own speed sets the rate. The 4-tuple multiplies R as the "
            "client's way of getting a port says: plain connect() and bind-no-port pick the "
            "port per destination, so each server port or address (and with bind-no-port each "
            "source address) is a pool of R, and tcp_tw_reuse applies to each; bind((addr, 0)) "
            "picks it before the destination is known and never takes a port a TIME_WAIT "
            "socket holds: one pool of R per source address, whatever the destinations, "
            "tcp_tw_reuse no help, and the stop is EADDRINUSE at bind().")


def churn(d: Data) -> Blocks:
    out = Blocks().md(churn_mechanism())
    points = churn_points(d.churn_runs, d.labels)
    if points.is_empty():
        return out.md("This run set has no finished churn point. `snakemake --cores 4 "
                      "--configfile config/churn.yaml` sweeps who closes first × "
                      "`tcp_tw_reuse` × rate on a 1,000-port range.")
    c = churn_counts(points)
    out.md(f"**{plural(c['points'], 'churn point')}** finished: {c['stopped']:,} stopped on an "
           f"error, {c['ran']:,} ran their full duration; **{c['agree']:,} of {c['points']:,}** "
           "ended as the model said.")
    out.chart(charts.churn_timeline(d.churn, churn_labels(d.churn_runs, d.labels)))
    out.chart(charts.churn_rate_vs_model(points))
    return out.table(points.select("point", "asked", "sustained", "model_bound", "connections",
                                   "outcome", "stopped_at_s", "model_stop_at_s", "verdict",
                                   pl.col("run_id").alias("run id")))
