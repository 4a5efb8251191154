"""The report's charts: pure functions from dataset frames (polars) to Altair charts.

Charts are drawn offline (report/embed.py): each is an inline SVG made by vl-convert, redrawn
interactive by vega-embed from a bundle inlined once per page; nothing is fetched.

One pure function per chart of the report (held connections, outcomes, model, latency,
server gap, hosts, 4-tuple, one million, churn); the frames they draw are shaped in
tcplimits.report.data, what they share (colours, scales, zoom, point names) is in
report/style.py. Charts that show points take ``labels`` (run id -> label, report/labels.py):
their axes, legends and tooltips name points by label, the tooltip keeps the run id.
"""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import polars as pl

from tcplimits.report.data import ensure_columns, per_client, pool_fill, server_gaps

from tcplimits.report.embed import (  # noqa: F401  (the .qmd calls charts.use_offline_renderer)
    CHART_CLASS, CONFIG, RENDERER, to_html, use_offline_renderer)
from tcplimits.report.style import (  # noqa: F401  (names the sections and tests use)
    COUNT_AXIS, ERRNO_COLORS, LIMIT_COLORS, LOG, NAME_AXIS, POINT, color_scale as _scale,
    named as _named, tip, with_points, zoom)
from tcplimits.report import style


def connections_vs_range(clients: pl.DataFrame,
                         labels: Mapping[str, str] | None = None) -> alt.FacetChart:
    """Connections per client container against the port range's size, coloured by nofile,
    one panel per layout (client containers x processes), wrapped: no empty panel."""
    df = with_points(per_client(clients).filter(pl.col("connections") > 0), labels)
    layouts = sorted(set(df.select("clients", "procs").iter_rows()),
                     key=lambda cp: (cp[0] is None, cp))
    titles = {cp: style.short_panel((("client", cp[0]), ("proc", cp[1]))) for cp in layouts}
    df = df.with_columns(layout=pl.struct("clients", "procs").map_elements(
        lambda r: titles[(r["clients"], r["procs"])], return_dtype=pl.Utf8))
    # The reference line has its own data, so every facet draws it over the whole range.
    lo, hi = (df["port_count"].min() or 1000), (df["port_count"].max() or 65535)
    diagonal = pl.DataFrame({"port_count": [lo, hi]})
    x = alt.X("port_count:Q", scale=LOG, axis=COUNT_AXIS, title="ports in the range")
    ports = alt.Chart(diagonal).mark_line(strokeDash=[4, 3], color="#888", strokeWidth=1).encode(
        x=x, y=alt.Y("port_count:Q", scale=LOG))
    points = alt.Chart().mark_point(filled=True, size=70, opacity=0.9).encode(
        x=x,
        y=alt.Y("connections:Q", scale=LOG, axis=COUNT_AXIS, title="connections per client"),
        color=alt.Color("nofile:O", title="nofile", scale=alt.Scale(scheme="viridis")),
        tooltip=tip("client", "connections", "port_count", "nofile"),
    ).add_params(zoom())
    chart = alt.layer(ports, points, data=df).properties(width=230, height=170).facet(
        facet=alt.Facet("layout:N", title=None, sort=[titles[cp] for cp in layouts]),
        columns=style.columns(len(layouts)),
    ).resolve_axis(x="independent", y="independent").properties(
        title=alt.Title("Connections per client against the port range",
                        subtitle="one panel per layout; dashed: as many connections as ports"))
    return _named(chart, "connections_vs_range")


def outcomes(clients: pl.DataFrame, labels: Mapping[str, str] | None = None) -> alt.Chart:
    """Per point, the client processes stacked by the errno (or reason) they stopped with."""
    df = with_points(ensure_columns(clients, error=pl.Utf8)
                     .with_columns(pl.col("error").fill_null("none"))
                     .group_by("run_id", "error", maintain_order=True)
                     .agg(processes=pl.len(), connections=pl.col("connections").sum()), labels)
    chart = alt.Chart(df).mark_bar().encode(
        y=alt.Y(f"{POINT}:N", title=None, sort=None, axis=NAME_AXIS),
        x=alt.X("processes:Q", title="client processes",
                axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("error:N", title="stopped with",
                        scale=_scale(ERRNO_COLORS, df["error"])),
        order=alt.Order("error:O"),
        tooltip=tip("error", "processes", "connections"),
    ).add_params(zoom("x")).properties(width=420, height=alt.Step(20),
                 title="How each client process stopped")
    return _named(chart, "outcomes")


def _limit_color(limits: pl.Series) -> alt.Color:
    # Legends below: long point names on the right-hand panel leave no room beside it.
    return alt.Color("limit:N", title="limiting factor", scale=_scale(LIMIT_COLORS, limits),
                     legend=alt.Legend(orient="bottom"))


def _against(base: alt.Chart, x: str, y: str, x_title: str, y_title: str,
             **encoding) -> alt.LayerChart:
    """Log-log scatter of y against x, with y = x dashed (where both are positive)."""
    positive = base.transform_filter(f"datum.{x} > 0 && datum.{y} > 0")
    diagonal = positive.mark_line(strokeDash=[4, 3], color="#888", strokeWidth=1).encode(
        x=alt.X(f"{x}:Q", scale=LOG), y=alt.Y(f"{x}:Q", scale=LOG))
    points = positive.mark_point(filled=True, size=80).encode(
        x=alt.X(f"{x}:Q", scale=LOG, axis=COUNT_AXIS, title=x_title),
        y=alt.Y(f"{y}:Q", scale=LOG, axis=COUNT_AXIS, title=y_title), **encoding
    ).add_params(zoom())
    return alt.layer(diagonal, points).properties(width=300, height=260)


def differences(comparisons: pl.DataFrame) -> bool:
    """Whether any point's observed count differs from its prediction (else a chart of the
    differences would be empty: the report says so in a sentence)."""
    if comparisons.is_empty() or "observed" not in comparisons.columns:
        return False
    gaps = (comparisons["observed"] - comparisons["predicted"]).drop_nulls()
    return bool(len(gaps)) and bool((gaps != 0).any())


def observed_vs_predicted(comparisons: pl.DataFrame,
                          labels: Mapping[str, str] | None = None) -> alt.TopLevelMixin:
    """Left: observed against predicted connections (log-log, y = x dashed). Right, where
    any point differs (``differences``): the difference per point, the tolerance grey."""
    df = with_points(ensure_columns(comparisons, tolerance=pl.Int64, within_tolerance=pl.Boolean),
                     labels).with_columns(
        deviation=pl.col("observed") - pl.col("predicted"),
        agrees=pl.when(pl.col("within_tolerance")).then(pl.lit("within tolerance"))
        .otherwise(pl.lit("beyond tolerance")),
        tol_lo=-pl.col("tolerance"),
    )
    color = _limit_color(df["limit"])
    base = alt.Chart(df)
    scatter = _against(
        base, "predicted", "observed", "predicted connections", "observed connections",
        color=color,
        shape=alt.Shape("agrees:N", title=None, legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=["within tolerance", "beyond tolerance"],
                                        range=["circle", "cross"])),
        tooltip=tip("predicted", "observed", "limit"),
    ).properties(title="Observed against predicted")
    if not differences(comparisons):
        return _named(scatter, "observed_vs_predicted")
    y = alt.Y(f"{POINT}:N", title=None, sort=None, axis=NAME_AXIS)
    # symlog: a gap of one port stays visible next to a tolerance of hundreds.
    gap_x = alt.X("deviation:Q", scale=alt.Scale(type="symlog"),
                  title="observed - predicted (grey: tolerance)")
    band = base.mark_bar(color="#e8e8e8", height=14).encode(
        y=y, x=alt.X("tol_lo:Q", scale=alt.Scale(type="symlog")), x2="tolerance:Q")
    bars = base.mark_bar(height=8).encode(
        y=y, x=gap_x,
        color=color, tooltip=tip("deviation", "tolerance")).add_params(zoom("x"))
    zero = base.mark_rule(color="#555").encode(x=alt.datum(0))
    gaps = alt.layer(band, bars, zero).properties(width=300, height=alt.Step(20),
                                                  title="Difference per point")
    return _named(alt.hconcat(scatter, gaps).resolve_scale(color="shared"),
                  "observed_vs_predicted")


def by_host(comparisons: pl.DataFrame,
            labels: Mapping[str, str] | None = None) -> alt.LayerChart:
    """Observed against predicted connections (log-log, y = x dashed), one colour per host:
    the points of a sweep spread over several machines (a cluster), told apart."""
    chart = _against(
        alt.Chart(with_points(ensure_columns(comparisons, host=pl.Utf8), labels)),
        "predicted", "observed",
        "predicted connections", "observed connections",
        color=alt.Color("host:N", title="host", legend=alt.Legend(orient="bottom")),
        tooltip=tip("host", "predicted", "observed", "limit"),
    ).properties(title="Observed against predicted, by host")
    return _named(chart, "by_host")


# How a run's host was when it connected (dataset column "noisy"; tcplimits.engine.host).
QUIET, NOISY = "quiet", "noisy (times suspect)"


def latency_vs_fill(series: pl.DataFrame, runs: pl.DataFrame | None = None,
                    labels: Mapping[str, str] | None = None) -> alt.LayerChart:
    """Mean connect() time against the share of the port range in use (``pool_fill``), for
    the port-bound runs (by ``runs.predicted_limit``; all runs when it is absent), one colour
    per point: a click on a point in the legend picks it out. Runs marked noisy
    (``runs.noisy``: a noisy host, dropped SYNs) are drawn dashed: their times are suspect.

    The samples are many: each row carries a small key, the point's name, range and host come
    from a lookup table of one row per point (the page carries the data once)."""
    df = series
    if runs is not None and "predicted_limit" in runs.columns:
        bound = runs.filter(pl.col("predicted_limit") == "ports").select("run_id")
        df = df.join(bound, on="run_id", how="semi")
    for column in ("port_count", "port_range", "noisy"):
        if column not in df.columns and runs is not None and column in runs.columns:
            df = df.join(runs.select("run_id", column), on="run_id", how="left")
    df = ensure_columns(pool_fill(df), port_range=pl.Utf8, noisy=pl.Boolean).with_columns(
        latency_us=(pl.col("connect_latency_s") * 1e6).round(1),
        host=pl.when(pl.col("noisy")).then(pl.lit(NOISY)).otherwise(pl.lit(QUIET)),
    ).filter(pl.col("latency_us") > 0)
    points = with_points(df.select("run_id", "port_range", "host").unique("run_id",
                                                                          maintain_order=True),
                         labels).with_row_index("k")
    samples = df.join(points.select("run_id", "k"), on="run_id").select(
        "k", "client", "proc", pl.col("fill").round(4), "latency_us")
    lookup = alt.LookupData(data=alt.InlineData(values=points.drop("k").with_columns(
        k=points["k"]).to_dicts()), key="k", fields=[POINT, "run_id", "port_range", "host"])
    # Click a point in the legend (shift-click for more): its lines stay, others fade.
    picked = alt.selection_point(fields=[POINT], bind="legend")
    lines = alt.Chart(samples).transform_lookup(lookup="k", from_=lookup).mark_line(
        strokeWidth=1.2).encode(
        x=alt.X("fill:Q", title="share of the port range in use",
                scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("latency_us:Q", scale=LOG, axis=COUNT_AXIS, title="mean connect() time (µs)"),
        color=alt.Color(f"{POINT}:N", title="point (click to pick)",
                        scale=alt.Scale(scheme="tableau20"),
                        sort=points[POINT].to_list(), legend=alt.Legend(labelLimit=320)),
        strokeDash=alt.StrokeDash("host:N", title="host when connecting",
                                  scale=alt.Scale(domain=[QUIET, NOISY],
                                                  range=[[1, 0], [4, 3]])),
        detail=["k:N", "client:N", "proc:N"],
        opacity=alt.condition(picked, alt.value(0.8), alt.value(0.06)),
        tooltip=[f"{POINT}:N", "port_range:N", "client:Q", "proc:Q", "fill:Q", "latency_us:Q",
                 "host:N", "run_id:N"],  # typed: fields from the lookup
    ).add_params(picked, zoom())
    half = alt.Chart(pl.DataFrame({"fill": [0.5], "label": ["half the range"]}))
    rule = half.mark_rule(strokeDash=[2, 2], color="#555").encode(x="fill:Q")
    text = half.mark_text(align="left", dx=4, dy=10, color="#555", fontSize=11).encode(
        x="fill:Q", y=alt.value(0), text="label:N")
    chart = alt.layer(lines, rule, text).properties(
        width=560, height=280, title="Connect time as the port range fills")
    return _named(chart, "latency_vs_fill")


def server_vs_clients(runs: pl.DataFrame,
                      labels: Mapping[str, str] | None = None) -> alt.HConcatChart:
    """Left: connections the server accepted against those the clients hold. Right: the gap
    per point, with a black tick at the accept queue's size (backlog + 1)."""
    df = server_gaps(ensure_columns(runs, predicted_limit=pl.Utf8)).with_columns(
        limit=pl.col("predicted_limit").fill_null("unknown"),
    ).select("run_id", "connections_total", "server_accepted", "gap", "queue", "limit")
    df = with_points(df, labels)
    color = _limit_color(df["limit"])
    base = alt.Chart(df)
    scatter = _against(
        base, "connections_total", "server_accepted", "established, as the clients count",
        "accepted by the server", color=color,
        tooltip=tip("connections_total", "server_accepted"),
    ).properties(title="Server against clients")
    y = alt.Y(f"{POINT}:N", title=None, sort=None, axis=NAME_AXIS)
    # symlog: a gap of a few connections stays visible beside an accept queue of thousands.
    gap_scale = alt.Scale(type="symlog")
    bars = base.mark_bar(height=10).encode(
        y=y, x=alt.X("gap:Q", title="clients - server (tick: backlog + 1)", scale=gap_scale),
        color=color,
        tooltip=tip("gap", "queue")).add_params(zoom("x"))
    ticks = base.mark_tick(color="black", thickness=2, size=16).encode(
        y=y, x=alt.X("queue:Q", scale=gap_scale))
    gaps = alt.layer(bars, ticks).properties(width=300, height=alt.Step(20),
                                             title="Not (yet) accepted")
    return _named(alt.hconcat(scatter, gaps).resolve_scale(color="shared"),
                  "server_vs_clients")


# --- Drawing ----------------------------------------------------------------------------------

def held_against_limits(runs: pl.DataFrame, limits: list[dict],
                        labels: Mapping[str, str] | None = None) -> alt.LayerChart:
    """Connections held per run (x: what the model asked for, log-log), coloured by network,
    with each host limit's room in connections as a dashed rule: ``limits`` are
    {"limit": name, "connections": room}."""
    points = with_points(runs.select("run_id", "network", "predicted_total",
                                     "connections_total"), labels)
    base = alt.Chart(points).mark_point(filled=True, size=80).encode(
        x=alt.X("predicted_total:Q", title="connections asked (model)", scale=LOG,
                axis=COUNT_AXIS),
        y=alt.Y("connections_total:Q", title="connections held", scale=LOG, axis=COUNT_AXIS),
        color=alt.Color("network:N", title="network"),
        tooltip=tip("network", "predicted_total", "connections_total")
    ).add_params(zoom())
    layers = [base]
    if limits:
        rules = pl.DataFrame(limits)
        layers.append(alt.Chart(rules).mark_rule(strokeDash=[4, 3], color="#888").encode(
            y="connections:Q", tooltip=["limit", "connections"]))
        layers.append(alt.Chart(rules).mark_text(align="left", dx=4, dy=-6, fontSize=10).encode(
            y="connections:Q", x=alt.value(4), text="limit:N"))
    return _named(alt.layer(*layers).properties(
        width=480, height=300, title="Connections held against the host's limits"),
        "held_against_limits")


CHURN_COLORS = {
    "opened per second": "#4c78a8",
    "TIME_WAIT, client": "#f58518",
    "TIME_WAIT, server": "#e45756",
}


def churn_timeline(churn: pl.DataFrame, labels: dict[str, str]) -> alt.FacetChart:
    """Mode churn, one panel per point (``labels``: run id -> point label): connections
    opened per second (all client processes) and TIME_WAIT sockets on the client side and on
    the server side, against seconds since the clients started."""
    df = ensure_columns(churn, role=pl.Utf8, proc=pl.Int32, opened=pl.Int64, time_wait=pl.Int64,
                        t_s=pl.Float64).filter(pl.col("run_id").is_in(list(labels)))
    opened = (df.filter(pl.col("proc").is_not_null())
              .with_columns(second=pl.col("t_s").floor())
              .group_by("run_id", "second").agg(pl.col("opened").sum().alias("value"))
              .rename({"second": "t_s"}).with_columns(series=pl.lit("opened per second")))
    # TIME_WAIT per side: the client containers' counts added up, sample by sample
    tw = (df.filter(pl.col("time_wait").is_not_null() & pl.col("proc").is_null())
          .with_columns(second=pl.col("t_s").round(0))
          .group_by("run_id", "role", "client", "second").agg(pl.col("time_wait").max())
          .group_by("run_id", "role", "second").agg(pl.col("time_wait").sum().alias("value"))
          .rename({"second": "t_s"})
          .with_columns(series=pl.concat_str(pl.lit("TIME_WAIT, "), pl.col("role")))
          .drop("role"))
    cols = ["run_id", "t_s", "value", "series"]
    # sorted: group_by's order is not stable, and the same data must draw the same chart
    long = (pl.concat([opened.select(cols), tw.select(cols)]).filter(pl.col("t_s") >= 0)
            .sort(cols))
    long = long.with_columns(point=pl.col("run_id").replace_strict(labels, default=None))
    chart = alt.Chart(long).mark_line(strokeWidth=1.5, interpolate="step-after").encode(
        x=alt.X("t_s:Q", title="seconds since the clients started"),
        y=alt.Y("value:Q", title="connections per second / sockets"),
        color=alt.Color("series:N", title=None, scale=_scale(CHURN_COLORS, long["series"])),
        tooltip=tip("series", "t_s", "value"),
    ).add_params(zoom("x")).properties(width=250, height=130).facet(
        facet=alt.Facet("point:N", title=None), columns=style.columns(len(labels)),
    ).resolve_scale(y="independent").resolve_axis(x="independent").properties(
        title=alt.Title("Churn: rate and TIME_WAIT against time",
                        subtitle="one panel per point; TIME_WAIT sampled about once a second"))
    return _named(chart, "churn_timeline")


def churn_rate_vs_model(points: pl.DataFrame) -> alt.LayerChart:
    """Mode churn: the rate each point sustained (dots, coloured by how it ended) against the
    model's sustainable rate (black ticks; none where no port bound applies). ``points``:
    sections.churn.churn_points()."""
    df = ensure_columns(points, sustained=pl.Float64, model_bound=pl.Float64, outcome=pl.Utf8,
                        point=pl.Utf8).filter(pl.col("sustained") > 0)
    y = alt.Y("point:N", title=None, sort=None, axis=alt.Axis(labelLimit=320))
    x_scale = alt.Scale(type="log")
    dots = alt.Chart(df).mark_point(filled=True, size=90).encode(
        x=alt.X("sustained:Q", scale=x_scale, axis=COUNT_AXIS,
                title="connections per second (log)"),
        y=y,
        color=alt.Color("outcome:N", title="ended with",
                        scale=_scale(ERRNO_COLORS, df["outcome"])),
        tooltip=tip("sustained", "model_bound", "outcome"),
    ).add_params(zoom("x"))
    ticks = alt.Chart(df.filter(pl.col("model_bound").is_not_null())).mark_tick(
        color="black", thickness=2, size=18).encode(x=alt.X("model_bound:Q", scale=x_scale), y=y)
    chart = alt.layer(dots, ticks).properties(
        width=420, height=alt.Step(24),
        title=alt.Title("Sustained rate against the model",
                        subtitle="black tick: the model's sustainable rate (ports / time each "
                                 "is held)"))
    return _named(chart, "churn_rate_vs_model")


BIND_MODE_COLORS = {"connect": "#4c78a8", "bind": "#e45756", "bind-no-port": "#54a24b"}


def tuple_space(points: pl.DataFrame,
                labels: Mapping[str, str] | None = None) -> alt.FacetChart:
    """Connections per client address against the size of its 4-tuple space (pool x server
    ports x server addresses), one panel per bind mode, shaped by client addresses; dashed:
    one connection per 4-tuple. ``points``: sections.fourtuple.chart_frame."""
    df = with_points(ensure_columns(points, space=pl.Int64, per_address=pl.Float64,
                                    bind_mode=pl.Utf8, client_addrs=pl.Int64), labels)
    lo, hi = (df["space"].min() or 1000), (df["space"].max() or 8000)
    x = alt.X("space:Q", scale=LOG, axis=COUNT_AXIS,
              title="4-tuple space")
    line = alt.Chart(pl.DataFrame({"space": [lo, hi]})).mark_line(
        strokeDash=[4, 3], color="#888", strokeWidth=1).encode(x=x, y=alt.Y("space:Q", scale=LOG))
    dots = alt.Chart().mark_point(filled=True, size=90, opacity=0.85).encode(
        x=x,
        y=alt.Y("per_address:Q", scale=LOG, axis=COUNT_AXIS,
                title="connections per client address"),
        color=alt.Color("bind_mode:N", title="bind mode", legend=None,
                        scale=_scale(BIND_MODE_COLORS, df["bind_mode"])),
        shape=alt.Shape("client_addrs:N", title="client addresses"),
        tooltip=tip("bind_mode", "server_ports", "server_addrs", "client_addrs",
                    "space", "per_address", "errno"),
    ).add_params(zoom())
    chart = alt.layer(line, dots, data=df).properties(width=190, height=200).facet(
        column=alt.Column("bind_mode:N", title="bind mode", sort=list(BIND_MODE_COLORS)),
    ).resolve_axis(x="independent", y="independent").properties(
        title=alt.Title("Connections per client address against its 4-tuple space",
                        subtitle="4-tuple space: pool x server ports x server addresses; "
                                 "dashed: one connection per 4-tuple"))
    return _named(chart, "tuple_space")
