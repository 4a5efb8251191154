"""Section 12, "One host, one million" (issue 10; pure functions of the dataset's runs table):
the runs of 100,000 connections or more, or on loopback: connections held against the model,
what stopped each (the model's term, or the host setting), how long connecting took, and what
a connection cost in memory and conntrack entries; the ceiling rung and the connect rate rung
by rung (tcplimits.report.sections.ceiling); then the host's limits as the biggest run met
them. Every number a sentence states is read from the runs; the limits' formulas are
tcplimits.model.hostlimits', recorded with each run. ``one_million`` lays the section out.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from typing import Any

import polars as pl

from tcplimits.model import hostlimits
from tcplimits.report import charts, render
from tcplimits.report.blocks import Blocks, plural
from tcplimits.report.data import Data
from tcplimits.report.sections import ceiling
from tcplimits.report.sections.hold import noisy_note

LADDER_MIN = 100_000  # the first rung of config/million.yaml
ROOM_IN_CONNECTIONS = {  # host settings whose room is counted in connections, for the chart
    hostlimits.CONNTRACK_MAX: "conntrack room",
    hostlimits.FILE_MAX: "fs.file-max room",
    hostlimits.MEMORY: "memory room",
}
LIMIT_EFFECTS = {"stops": "the point stops ({errno})", "refused": "the point is not run",
                 "teardown": "teardown only"}


def ladder_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs of the section, smallest first."""
    if runs.is_empty() or "network" not in runs.columns:
        return runs.clear()
    asked = pl.col("predicted_total").fill_null(0)
    keep = runs.filter((pl.col("network") == "loopback") | (asked >= LADDER_MIN)
                       | pl.col("host_limit").is_not_null())
    return keep.sort("predicted_total", nulls_last=True)


def host_limits_of(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The host limits recorded with a run (dataset column host_limits, JSON)."""
    return json.loads(run["host_limits"]) if run.get("host_limits") else []


def ladder_table(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per run: layout, connections held and predicted, what stopped it, time and
    rate, bytes and conntrack entries per connection."""
    rows = []
    for r in ladder_runs(runs).iter_rows(named=True):
        held, connect_s, stop = r.get("connections_total"), r.get("connect_s"), r.get("host_limit")
        rows.append({
            "network": r["network"],
            "layout": f"{r['clients']} x {r['procs']} processes, "
                      f"{r.get('resolved_server_workers') or '?'} server workers",
            "status": r["status"],
            "held": held,
            "predicted": r.get("predicted_total"),
            "limit": f"{stop} (host)" if stop else r.get("predicted_limit"),
            "connect s": round(connect_s, 1) if connect_s is not None else None,
            "per s": round(held / connect_s) if held and connect_s else None,
            "kernel B/conn": r.get("kernel_bytes_per_connection"),
            "user B/conn": r.get("user_bytes_per_connection"),
            "conntrack entries": r.get("conntrack_server_namespace"),
            "teardown s": r.get("teardown_s"),
            "times": "suspect" if r.get("noisy") else "ok",
        })
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def biggest(runs: pl.DataFrame) -> dict[str, Any] | None:
    """The run of the section that held the most connections (ties: the last asked)."""
    ladder = ladder_runs(runs).filter(pl.col("connections_total").is_not_null())
    if ladder.is_empty():
        return None
    return ladder.sort(["connections_total", "predicted_total"]).row(-1, named=True)


def limits_table(run: Mapping[str, Any]) -> pl.DataFrame:
    """The host's limits as one run met them."""
    rows = [{"setting": lim["setting"], "value here": lim["value"],
             "this run needs": lim["needed"], "room (connections)": lim.get("room"),
             "when reached": LIMIT_EFFECTS[lim["effect"]].format(errno=lim["errno"]).replace(
                 " (None)", ""),
             "how to pass it": (lim["command"] or lim["way_around"] or "") if lim["binds"]
             else ""}
            for lim in host_limits_of(run)]
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
            f"the agents' own memory, over {plural(ladder.height, 'run')}.")
    if slab:
        text += (f" The host's Slab grew {statistics.median(slab):,.0f} bytes per connection: "
                 "it also counts the accepted sockets, which the kernel allocates before any "
                 "process (and cgroup) owns them, and whatever else ran on the host.")
    return text


def million_headline(runs: pl.DataFrame) -> str:
    """The most connections held, how, and what stopped the runs of each network."""
    top = biggest(runs)
    if top is None:
        return (f"No run of this dataset asked for {LADDER_MIN:,} connections or more; "
                "`snakemake --cores 4 --configfile config/million.yaml` runs the ladder.")
    text = (f"The most connections held at once on this host: **{top['connections_total']:,}** "
            f"({top['network']}, {top['clients']} client containers x {top['procs']} processes, "
            f"{top.get('resolved_server_workers')} server workers")
    if top.get("connect_s"):
        text += f", connected in {top['connect_s']:.0f} s"
    text += ")."
    for (net,), group in ladder_runs(runs).group_by("network", maintain_order=True):
        walls = group.filter(pl.col("host_limit").is_not_null())
        if walls.height:
            w = walls.row(0, named=True)
            text += (f" On {net}, {w['host_limit']} stopped the run at "
                     f"{w['connections_total'] or 0:,} of {w['predicted_total'] or 0:,} "
                     "predicted connections (the model predicts that stop from the host's "
                     "value and what the table already held).")
    return text


def limit_rules(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The host limits of ``run`` that are counted in connections, as the chart's rules."""
    return [{"limit": f"{ROOM_IN_CONNECTIONS[lim['setting']]} ({lim['setting']})",
             "connections": lim["room"]} for lim in host_limits_of(run)
            if lim["setting"] in ROOM_IN_CONNECTIONS and lim.get("room")]


def one_million(d: Data) -> Blocks:
    out = Blocks().md(million_headline(d.runs))
    table = ladder_table(d.runs)
    if table.is_empty():
        return out
    top = biggest(d.runs)
    out.table(table)
    note = noisy_note(d.runs, ladder_runs(d.runs)["run_id"].to_list(),
                      "marked suspect in the table: the counts stand", labels=d.labels)
    if note:
        out.md(note)
    if top is not None:
        held = ladder_runs(d.runs).filter(pl.col("connections_total").is_not_null())
        out.chart(charts.held_against_limits(held, ceiling.ceiling_rules(top)
                                             or limit_rules(top), d.labels))
    for run in ceiling.ceiling_runs(d.runs).iter_rows(named=True):  # issue 22
        out.md(ceiling.ceiling_sentence(run)).table(ceiling.bounds_table(run))
    rate = ceiling.rate_sentence(ladder_runs(d.runs))
    if rate:
        out.md(rate)
    memory = memory_sentence(d.runs)
    if memory:
        out.md(memory)
    limits = limits_table(top) if top else pl.DataFrame()
    if not limits.is_empty():
        out.md(f"The host's limits as the biggest run ({render.md_escape(d.name(top['run_id']))}) met them. tcplimits "
               "changes none of them; where one stops a point the run says so, with the "
               "command that would raise it:")
        out.table(limits)
    said: set[str] = set()
    for r in ladder_runs(d.runs).iter_rows(named=True):
        for lim in hostlimits.from_record(r.get("host_limits")):
            if lim.binds and lim.sentence() not in said:
                said.add(lim.sentence())
                out.md(lim.sentence())
    return out
