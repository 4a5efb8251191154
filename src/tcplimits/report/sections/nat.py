"""The report's section "Behind a NAT" (issue 16): the NAT's shared pool against the clients'
own pools, the errno that changes, the router's counters, and how many NAT addresses a load
needs. Pure functions of the dataset's frames; every number comes from the measured points or
from tcplimits.model.nat and .natchurn, which hold the formulas.
"""

from __future__ import annotations

import html
from typing import Any

import altair as alt
import polars as pl

from tcplimits.model import nat as nat_model
from tcplimits.model import natchurn
from tcplimits.report.blocks import Blocks

_COLUMNS = ["run_id", "clients", "port_count", "nat_addrs", "nat_pool", "nat_port_range",
            "server_ports", "nat_direct_total", "nat_predicted_low", "nat_predicted_total",
            "connections_total", "nat_addrs_used", "nat_insert_failed", "nat_drop",
            "nat_conntrack_held", "nat_time_wait_timeout_s", "nat_agrees", "nat_peers"]


def nat_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The finished points behind the NAT (mode hold), with their nat_* columns."""
    if runs.is_empty() or "nat" not in runs.columns or "nat_predicted_total" not in runs.columns:
        return pl.DataFrame()
    return runs.filter((pl.col("nat") == nat_model.GATEWAY) & (pl.col("status") == "ok")
                       & pl.col("nat_predicted_total").is_not_null())


def errnos_of(clients: pl.DataFrame, run_ids: list[str]) -> dict[str, str]:
    """run_id -> the errnos its client processes stopped with, joined."""
    if clients.is_empty() or not run_ids:
        return {}
    got = (clients.filter(pl.col("run_id").is_in(run_ids)).group_by("run_id")
           .agg(pl.col("error").drop_nulls().unique().sort().str.join(", ").alias("e")))
    return dict(got.iter_rows())


def peers_phrase(peers: Any) -> str:
    """The server's view, from the nat_peers JSON: 'a.b.c.d: n from ports lo-hi; ...'."""
    import json

    try:
        rows = json.loads(peers) if isinstance(peers, str) else (peers or [])
    except ValueError:
        return ""
    return "; ".join(f"{r['addr']}: {r['connections']:,} from ports {r['port_lo']}-"
                     f"{r['port_hi']}" for r in rows)


def nat_table(runs: pl.DataFrame, clients: pl.DataFrame) -> pl.DataFrame:
    """One row per point behind the NAT, as the report shows it."""
    pts = nat_runs(runs)
    if pts.is_empty():
        return pl.DataFrame()
    stops = errnos_of(clients, pts["run_id"].to_list())
    rows = []
    for r in pts.sort("nat_pool", "clients", "nat_addrs").iter_rows(named=True):
        low, high = r["nat_predicted_low"], r["nat_predicted_total"]
        rows.append({
            "point": r["run_id"],
            "clients × own pool": f"{r['clients']} × {r['port_count']:,}",
            "NAT addresses (used)": f"{r['nat_addrs']} ({r['nat_addrs_used']})",
            "NAT pool": f"{r['nat_pool']:,} ({r['nat_port_range']})",
            "without NAT": r["nat_direct_total"],
            "model": f"{high:,}" if low == high else f"{low:,} – {high:,}",
            "measured": r["connections_total"],
            "stopped with": stops.get(r["run_id"], ""),
            "insert_failed / drop": f"{r['nat_insert_failed']} / {r['nat_drop']}",
            "router entries held": r["nat_conntrack_held"],
            "server saw": peers_phrase(r["nat_peers"]),
            "agrees": "yes" if r["nat_agrees"] else "no",
        })
    return pl.DataFrame(rows)


def pool_chart(runs: pl.DataFrame) -> alt.Chart:
    """Each point: what the clients' own pools allow (grey), the NAT model's count (tick) and
    the measured count (dot)."""
    pts = nat_runs(runs)
    df = pts.select(pl.col("run_id").alias("point"),
                    pl.col("nat_direct_total").alias("without NAT"),
                    pl.col("nat_predicted_total").alias("NAT model"),
                    pl.col("connections_total").alias("measured"))
    y = alt.Y("point:N", title=None, sort=None, axis=alt.Axis(labelLimit=360))
    scale = alt.Scale(type="log")
    bars = alt.Chart(df).mark_bar(color="#d0d0d0").encode(
        x=alt.X("without NAT:Q", scale=scale, title="connections (log)"), y=y,
        tooltip=["point", "without NAT", "NAT model", "measured"])
    ticks = alt.Chart(df).mark_tick(color="black", thickness=2, size=18).encode(
        x=alt.X("NAT model:Q", scale=scale), y=y)
    dots = alt.Chart(df).mark_point(filled=True, size=80, color="#e45756").encode(
        x=alt.X("measured:Q", scale=scale), y=y)
    return alt.layer(bars, ticks, dots).properties(
        width=420, height=alt.Step(24),
        title=alt.Title("The NAT's shared pool against the clients' own pools",
                        subtitle="grey: the clients' own pools; black tick: the NAT model; "
                                 "red dot: measured"))


def addresses_sentence(runs: pl.DataFrame) -> str:
    """How many NAT addresses N clients need for M connections to one destination, from the
    model, with the largest point's N and M when the data has one."""
    pool = nat_model.MASQUERADE_DEFAULT_RANGE[1] - nat_model.MASQUERADE_DEFAULT_RANGE[0] + 1
    pts = nat_runs(runs)
    if pts.is_empty():
        clients, want = 3, 84_696
    else:
        top = pts.sort("nat_direct_total").row(-1, named=True)
        clients, want = int(top["clients"]), int(top["nat_direct_total"])
    need = nat_model.addresses_needed(want, clients, pool)
    answer = (f"**{need}** NAT address{'es' if need != 1 else ''}" if need >= 0 else
              "no number of NAT addresses: more client addresses are needed first")
    return (f"**How many NAT addresses do N clients need for M connections to one destination?** "
            f"⌈M / {pool:,}⌉ with MASQUERADE's default pool ({pool:,} ports per NAT address and "
            f"destination, 1024-65535, whatever the clients' own range), and never more than N: "
            f"the NAT hashes each source address to one NAT address per destination address, "
            f"so a client with one address never spreads over two, and two clients may hash "
            f"onto the same one (a client's extra source addresses each hash on their own; "
            f"behind one NAT address they add nothing). "
            f"For {clients:,} clients asking {want:,} connections: {answer}; each more "
            f"destination port or server address is another pool per NAT address.")


def mechanism() -> str:
    return ("Behind a source NAT the pool is the NAT's: one per (NAT address, destination "
            "address, destination port), shared by every client behind it, whatever each "
            "client's own `ip_local_port_range`. When the NAT finds no free port it drops the "
            "SYN, so the client retransmits and ends with **ETIMEDOUT** at its connect timeout, "
            "never EADDRNOTAVAIL; the router's conntrack counters `insert_failed` and `drop` "
            "count each dropped SYN. Here the router is a container on the run's network "
            "(`nat: gateway`): clients route the server's addresses through it, it translates "
            f"with MASQUERADE or SNAT. A pool of at most {nat_model.MAX_ATTEMPTS} ports is "
            "searched whole and fills exactly; a larger one is probed in bounded rounds, so it "
            "may stop a few ports short (the model's span). Docker's own path to a published "
            "port (`nat: published`) is refused: the runs' networks are internal, and Docker "
            "publishes no port of a container on an internal network (measured: the binding is "
            "accepted and ignored, no DNAT rule, no userland proxy).")


def behind_a_nat(d: Any) -> Blocks:
    """The section's blocks: mechanism, table, chart, the addresses answer."""
    out = Blocks().md(mechanism())
    table = nat_table(d.runs, d.clients)
    if table.is_empty():
        out.md("This run set has no finished point behind a NAT. `snakemake --cores 4 "
               "--configfile config/nat.yaml` runs the shared pool at 100 to 1,000 ports.")
        return churn_blocks(out, getattr(d, "churn_runs", None)).md(addresses_sentence(d.runs))
    pts = nat_runs(d.runs)
    agree = int(pts["nat_agrees"].fill_null(False).sum())
    out.md(f"**{agree} of {pts.height}** point(s) behind the NAT held what the NAT model "
           "predicted.")
    out.chart(pool_chart(d.runs))
    out.table(table)
    tw = [v for v in pts["nat_time_wait_timeout_s"].to_list() if v is not None]
    if tw:
        out.md(f"The router keeps a closed connection's entry, and its port, "
               f"`nf_conntrack_tcp_timeout_time_wait` = {html.escape(str(tw[0]))} s (measured "
               "in the router's namespace).")
    out = churn_blocks(out, getattr(d, "churn_runs", None))
    return out.md(addresses_sentence(d.runs))


def nat_churn_runs(churn_runs: pl.DataFrame | None) -> pl.DataFrame:
    """The finished churn points behind the NAT that carry the NAT's churn model."""
    if (churn_runs is None or churn_runs.is_empty()
            or "nat_churn_limit" not in churn_runs.columns):
        return pl.DataFrame()
    return churn_runs.filter((pl.col("nat") == nat_model.GATEWAY)
                             & (pl.col("status") == "ok")
                             & pl.col("nat_churn_limit").is_not_null())


def _rate(value: Any) -> str:
    return "–" if value is None else f"{value:,.0f}/s" if value >= 10 else f"{value:,.1f}/s"


def _span(typical: Any, low: Any, high: Any, duration: float) -> str:
    """A count span over a run's duration as rates: "18/s (15/s – 27/s)"."""
    if typical is None or not duration:
        return "–"
    if low == high:
        return _rate(typical / duration)
    return f"{_rate(typical / duration)} ({_rate(low / duration)} – {_rate(high / duration)})"


def churn_table(churn_runs: pl.DataFrame | None) -> pl.DataFrame:
    """One row per churn point through the NAT: the model's sustainable rate (its span) beside
    the measured one."""
    pts = nat_churn_runs(churn_runs)
    if pts.is_empty():
        return pl.DataFrame()
    rows = []
    for r in pts.sort("closer", "nat_pool", "clients").iter_rows(named=True):
        measured = (r["churn_connections"] / r["duration"]
                    if r.get("churn_connections") is not None and r.get("duration") else None)
        ts = r.get("timestamps")
        low, high = r["nat_churn_low"], r["nat_churn_high"]
        rows.append({
            "point": r["run_id"],
            "closer": r["closer"],
            "clients": r["clients"],
            "timestamps / tw_reuse": f"{1 if ts is None else ts} / {r.get('tw_reuse')}",
            "NAT pool": f"{r['nat_pool']:,}" if r.get("nat_pool") is not None else "",
            "asked": "max" if r.get("rate") in (None, "max") else
                     f"{int(r['rate']) * r['clients'] * (r.get('procs') or 1):,}/s",
            "model, whole run": _span(r.get("nat_churn_connections"),
                                      r.get("nat_churn_connections_low"),
                                      r.get("nat_churn_connections_high"), r["duration"]),
            "measured": _rate(measured),
            "model, pool turned over": (
                _rate(r["nat_churn_rate"]) if low == high else
                f"{_rate(r['nat_churn_rate'])} ({_rate(low)} – {_rate(high)})"),
            "bound": r["nat_churn_limit"],
            "NAT dropped": r.get("nat_insert_failed"),
            "agrees": {True: "yes", False: "no"}.get(r.get("nat_agrees"), "–"),
        })
    return pl.DataFrame(rows)


def churn_sentence(churn_runs: pl.DataFrame | None) -> str:
    """The sustainable churn rate through the NAT, from the model, with the data's pools."""
    pts = nat_churn_runs(churn_runs)
    pool = nat_model.MASQUERADE_DEFAULT_RANGE[1] - nat_model.MASQUERADE_DEFAULT_RANGE[0] + 1
    held = (pts.filter(pl.col("nat_churn_limit") == natchurn.PAWS) if pts.height
            else pl.DataFrame())
    seen = ""
    if held.height:
        r = held.sort("nat_pool").row(0, named=True)
        per_proc = r["nat_churn_rate"] / (r["clients"] * (r.get("procs") or 1))
        seen = (f" Here, through {r['nat_pool']:,} ports ({html.escape(r['run_id'])}), the model gives "
                f"{_rate(r['nat_churn_rate'])} ({_rate(r['nat_churn_low'])} – "
                f"{_rate(r['nat_churn_high'])}) for {r['clients']} client(s), about "
                f"{_rate(per_proc)} per process once the pool has turned over.")
    return (f"**The sustainable churn rate through the NAT.** The client closing first: the NAT "
            f"adds no bound (closed entries are evicted; the client's own TIME_WAIT, or "
            f"tcp_tw_reuse, bounds it as without the NAT). The server closing first: "
            f"pool / {natchurn.SERVER_TIME_WAIT_S:g} s per NAT address and destination "
            f"({pool:,} / {natchurn.SERVER_TIME_WAIT_S:g} = "
            f"{pool / natchurn.SERVER_TIME_WAIT_S:,.0f}/s with MASQUERADE's default pool), "
            f"above which reused NAT ports meet the server's TIME_WAIT; with the clients' "
            f"timestamps at the kernel's default (a random offset per connection) it rejects "
            f"half their SYNs (PAWS), each a fast retransmit or a 1 s RTO that the client's "
            f"loop waits for, so each process runs only as fast as those delays leave it. "
            f"tcp_timestamps 0 or 2 on the clients lift it." + seen)


def churn_addresses_sentence(churn_runs: pl.DataFrame | None) -> str:
    """How many NAT addresses keep a churn below the server's TIME_WAIT turnover, from the
    model, with the fastest churn point's asked rate when the data has one."""
    pool = nat_model.MASQUERADE_DEFAULT_RANGE[1] - nat_model.MASQUERADE_DEFAULT_RANGE[0] + 1
    pts = nat_churn_runs(churn_runs)
    asked = [v for v in (pts["nat_churn_rate"].to_list() if pts.height else []) if v]
    want = 5_000.0
    if pts.height and "rate" in pts.columns:
        paced = [int(r["rate"]) * r["clients"] * (r.get("procs") or 1)
                 for r in pts.iter_rows(named=True) if str(r.get("rate")).isdigit()]
        want = float(max(paced)) if paced else max(asked, default=want)
    need = natchurn.churn_addresses_needed(want, pool)
    return (f"For churn, the server closing first, each NAT address serves "
            f"{pool / natchurn.SERVER_TIME_WAIT_S:,.0f} new connections per second per "
            f"destination before its ports come back to the server's TIME_WAIT: {want:,.0f}/s "
            f"to one destination needs **{need}** NAT address{'es' if need != 1 else ''} "
            f"(⌈{want:,.0f} / ({pool:,} / {natchurn.SERVER_TIME_WAIT_S:g} s)⌉), spread by the "
            f"hash over at least as many client addresses.")


def churn_blocks(out, churn_runs: pl.DataFrame | None):
    """Churn points behind the NAT: the model's sustainable rate beside the measured one,
    each point's verdict, and the addresses a churn needs."""
    table = churn_table(churn_runs)
    if table.is_empty():
        return out.md(churn_sentence(churn_runs))
    pts = nat_churn_runs(churn_runs)
    agree = sum(1 for v in pts["nat_agrees"].to_list() if v)
    out.md(churn_sentence(churn_runs))
    out.md(f"**{agree} of {pts.height}** churn point(s) through the NAT ran as the model "
           "said (the server closing first: the count within the model's span).")
    out.table(table)
    out.md(" ".join(f"{html.escape(r['run_id'])}: {html.escape(r['nat_verdict'])}."
                    for r in pts.sort("closer").iter_rows(named=True) if r.get("nat_verdict")))
    return out.md(churn_addresses_sentence(churn_runs))
