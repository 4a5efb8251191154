"""The report's section "One host, one million" (issue 10): pure functions of the runs table.

Which runs: every run that asked for at least LADDER_MIN connections, or ran on loopback. For
each: connections held against what the model predicted, what stopped it (the model's term,
the clients' errno, the host setting when one did), how long connecting took, and what each
connection cost in memory and conntrack entries. Then the host's limits for the biggest run:
each setting, its value here, what the run needed, where it stops a point, and the command
an operator would use.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import polars as pl

from . import hostlimits

LADDER_MIN = 100_000  # the first rung of config/million.yaml
EFFECTS = {"stops": "the point stops ({errno})", "refused": "the point is not run",
           "teardown": "teardown only"}
CONNECTION_LIMITS = {  # host settings whose room is counted in connections
    hostlimits.CONNTRACK_MAX: "conntrack room",
    hostlimits.FILE_MAX: "fs.file-max room",
    hostlimits.MEMORY: "memory room",
}


def ladder_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs of the section, smallest first."""
    if runs.is_empty() or "network" not in runs.columns:
        return runs.clear()
    asked = pl.col("predicted_total").fill_null(0)
    keep = runs.filter((pl.col("network") == "loopback") | (asked >= LADDER_MIN)
                       | pl.col("host_limit").is_not_null())
    return keep.sort("predicted_total", nulls_last=True)


def _limits(row: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(row["host_limits"]) if row.get("host_limits") else []


def ladder_table(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per run: layout, connections held and predicted, what stopped it, time and
    rate, bytes and conntrack entries per connection."""
    rows = []
    for r in ladder_runs(runs).iter_rows(named=True):
        held = r.get("connections_total")
        connect_s = r.get("connect_s")
        stop = r.get("host_limit")
        rows.append({
            "network": r["network"],
            "layout": f"{r['clients']} x {r['procs']} processes, "
                      f"{r.get('resolved_server_workers') or '?'} server workers",
            "status": r["status"],
            "held": held,
            "predicted": r.get("predicted_total"),
            "limit": (f"{stop} (host)" if stop else r.get("predicted_limit")),
            "connect s": round(connect_s, 1) if connect_s is not None else None,
            "per s": round(held / connect_s) if held and connect_s else None,
            "kernel B/conn": r.get("kernel_bytes_per_connection"),
            "user B/conn": r.get("user_bytes_per_connection"),
            "conntrack entries": r.get("conntrack_server_namespace"),
            "teardown s": r.get("teardown_s"),
        })
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def biggest(runs: pl.DataFrame) -> dict[str, Any] | None:
    """The run that held the most connections (ties: the last asked)."""
    ladder = ladder_runs(runs).filter(pl.col("connections_total").is_not_null())
    if ladder.is_empty():
        return None
    return ladder.sort(["connections_total", "predicted_total"]).row(-1, named=True)


def limits_table(run: dict[str, Any]) -> pl.DataFrame:
    """The host's limits as one run met them."""
    rows = [{"setting": lim["setting"], "value here": lim["value"], "this run needs":
             lim["needed"], "room (connections)": lim.get("room"),
             "when reached": EFFECTS[lim["effect"]].format(errno=lim["errno"]),
             "how to pass it": (lim["command"] or lim["way_around"] or "") if lim["binds"]
             else ""}
            for lim in _limits(run)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def memory_sentence(runs: pl.DataFrame) -> str | None:
    """What one connection costs, from every run of the section that measured it."""
    ladder = ladder_runs(runs).filter(pl.col("kernel_bytes_per_connection").is_not_null()
                                      & (pl.col("connections_total") > 0))
    if ladder.is_empty():
        return None
    kernel = statistics.median(ladder["kernel_bytes_per_connection"].to_list())
    user = statistics.median(ladder["user_bytes_per_connection"].drop_nulls().to_list() or [0])
    slab = ladder["host_slab_bytes_per_connection"].drop_nulls().to_list()
    text = (f"Each connection held (both ends on this host) cost a median {kernel:,.0f} bytes "
            f"of kernel memory charged to the containers' cgroups and {user:,.0f} bytes of "
            f"the agents' own memory, over {ladder.height} run(s).")
    if slab:
        text += (f" The host's Slab grew {statistics.median(slab):,.0f} bytes per connection: "
                 "it also counts the accepted sockets, which the kernel allocates before any "
                 "process (and cgroup) owns them, and whatever else ran on the host.")
    return text


def headline(runs: pl.DataFrame) -> str:
    """One paragraph: the most connections held, how, and what stopped each network."""
    top = biggest(runs)
    if top is None:
        return (f"No run of this dataset asked for {LADDER_MIN:,} connections or more; "
                "`snakemake --configfile config/million.yaml` runs the ladder.")
    text = (f"The most connections held at once on this host: **{top['connections_total']:,}** "
            f"({top['network']}, {top['clients']} client containers x {top['procs']} processes, "
            f"{top.get('resolved_server_workers')} server workers")
    if top.get("connect_s"):
        text += f", connected in {top['connect_s']:.0f} s"
    text += ")."
    for net, group in ladder_runs(runs).group_by("network", maintain_order=True):
        walls = group.filter(pl.col("host_limit").is_not_null())
        if walls.height:
            w = walls.row(0, named=True)
            text += (f" On {net[0]}, {w['host_limit']} stopped the run at "
                     f"{w['connections_total'] or 0:,} of {w['predicted_total'] or 0:,} "
                     "predicted connections (the model predicts that stop from the host's "
                     "value and what the table already held).")
    return text


def chart(runs: pl.DataFrame):
    """Connections held per run against its prediction, with the host's limits (in
    connections) of the biggest run as rules."""
    import altair as alt

    table = ladder_runs(runs).filter(pl.col("connections_total").is_not_null())
    if table.is_empty():
        return None
    points = table.select("run_id", "network", "predicted_total", "connections_total")
    top = biggest(runs)
    rules = [{"limit": f"{CONNECTION_LIMITS[lim['setting']]} ({lim['setting']})",
              "connections": lim["room"]} for lim in _limits(top)
             if lim["setting"] in CONNECTION_LIMITS and lim.get("room")]
    base = alt.Chart(points).mark_point(filled=True, size=80).encode(
        x=alt.X("predicted_total:Q", title="connections asked (model)", scale=alt.Scale(
            type="log"), axis=alt.Axis(format="~s")),
        y=alt.Y("connections_total:Q", title="connections held", scale=alt.Scale(type="log"),
                axis=alt.Axis(format="~s")),
        color=alt.Color("network:N", title="network"),
        tooltip=["run_id", "network", "predicted_total", "connections_total"])
    layers = [base]
    if rules:
        layers.append(alt.Chart(pl.DataFrame(rules)).mark_rule(
            strokeDash=[4, 3]).encode(y="connections:Q", color=alt.value("#888"),
                                     tooltip=["limit", "connections"]))
        layers.append(alt.Chart(pl.DataFrame(rules)).mark_text(
            align="left", dx=4, dy=-6, fontSize=10).encode(
            y="connections:Q", x=alt.value(4), text="limit:N"))
    return alt.layer(*layers).properties(width=480, height=300,
                                         title="Connections held against the host's limits")


def section(runs: pl.DataFrame) -> list[tuple[str, Any]]:
    """The section's content in order: ("markdown" | "html" | "chart", item)."""
    from . import render

    out: list[tuple[str, Any]] = [("markdown", headline(runs))]
    table = ladder_table(runs)
    if table.is_empty():
        return out
    out.append(("html", render.html_table(table)))
    drawn = chart(runs)
    if drawn is not None:
        out.append(("chart", drawn))
    memory = memory_sentence(runs)
    if memory:
        out.append(("markdown", memory))
    top = biggest(runs)
    limits = limits_table(top) if top else pl.DataFrame()
    if not limits.is_empty():
        out.append(("markdown", f"The host's limits as the biggest run ({top['run_id']}) met "
                                "them. tcplimits changes none of them; where one stops a "
                                "point the run says so, with the command that would raise it:"))
        out.append(("html", render.html_table(limits)))
    notes = [lim for r in ladder_runs(runs).iter_rows(named=True) for lim in _limits(r)
             if lim["binds"]]
    seen: set[str] = set()
    for lim in notes:
        sentence = hostlimits.HostLimit(**{k: v for k, v in lim.items() if k != "binds"}
                                        ).sentence()
        if sentence not in seen:
            seen.add(sentence)
            out.append(("markdown", sentence))
    return out
