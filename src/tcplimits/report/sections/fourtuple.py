"""Sections 9 and 10, "The 4-tuple, member by member" and "The book's claim" (pure functions
of the dataset's frames); ``tuple_members`` and ``book_claim`` lay them out. Every number a
sentence states is read from the measured points; a sentence whose points the dataset lacks
is left out, never guessed.

The formulas (what each member buys per bind mode) are tcplimits.model.fourtuple's; this module
selects points, counts and words them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from tcplimits import model
from tcplimits.config.params import FIELDS
from tcplimits.model import fourtuple
from tcplimits.report import charts, render
from tcplimits.report.blocks import Blocks, bullets, number
from tcplimits.report.data import Data
from tcplimits.results import STATUS_OK

TUPLE_KEYS = ("server_ports", "server_addrs", "client_addrs", "bind_mode")
BOOK_PORTS = 64_511  # "1024-65535" as Release It! counts it (one short of its 64,512 ports)


def _defaults(df: pl.DataFrame) -> pl.DataFrame:
    """Older datasets have no 4-tuple columns: they ran with the defaults."""
    return df.with_columns(
        (pl.col(k).fill_null(FIELDS[k].default) if k in df.columns
         else pl.lit(FIELDS[k].default).alias(k)) for k in TUPLE_KEYS)


def beyond_one_pool(runs: pl.DataFrame) -> list[str]:
    """Run ids of the points whose clients have more than one pool: several server ports or
    addresses, or several source addresses. One connection per port no longer bounds them;
    section 9 sets them against their 4-tuple space."""
    if runs.is_empty():
        return []
    return _defaults(runs).filter((pl.col("server_ports") > 1) | (pl.col("server_addrs") > 1)
                                  | (pl.col("client_addrs") > 1))["run_id"].to_list()


def tuple_points(runs: pl.DataFrame, clients: pl.DataFrame) -> pl.DataFrame:
    """One row per finished, port-bound point with one client container: its 4-tuple shape,
    the space of one client address (pool x server ports x server addresses), connections
    per client address, the errno(s) it stopped with, and the model's prediction."""
    if runs.is_empty():
        return pl.DataFrame()
    ok = _defaults(runs).filter((pl.col("status") == STATUS_OK) & (pl.col("clients") == 1)
                                & (pl.col("predicted_limit") == model.PORTS))
    errors = (clients.group_by("run_id")
              .agg(pl.col("error").drop_nulls().unique().sort().str.join(", ").alias("errno"))
              if not clients.is_empty() else pl.DataFrame({"run_id": [], "errno": []},
                                                          schema={"run_id": pl.Utf8,
                                                                  "errno": pl.Utf8}))
    return (ok.join(errors, on="run_id", how="left")
            .with_columns(
                space=pl.col("port_count") * pl.col("server_ports") * pl.col("server_addrs"),
                sources_used=pl.when(pl.col("bind_mode") == fourtuple.CONNECT).then(1)
                .otherwise(pl.col("client_addrs")),
                per_address=pl.col("connections_total") / pl.col("client_addrs"))
            .select("run_id", "bind_mode", "port_count", "server_ports", "server_addrs",
                    "client_addrs", "space", "sources_used", "connections_total",
                    "per_address", "predicted_total", "errno")
            .sort("bind_mode", "client_addrs", "space"))


def varies_tuple(points: pl.DataFrame) -> bool:
    """Does any point change a member of the 4-tuple or the bind mode?"""
    return not points.is_empty() and points.filter(
        (pl.col("space") != pl.col("port_count")) | (pl.col("client_addrs") > 1)
        | (pl.col("bind_mode") != FIELDS["bind_mode"].default)).height > 0


def find(points: pl.DataFrame, **shape: Any) -> dict | None:
    """The point with this 4-tuple shape (unset members at their defaults), if measured."""
    want = {k: shape.get(k, FIELDS[k].default) for k in TUPLE_KEYS}
    if points.is_empty():
        return None
    rows = points.filter(*(pl.col(k) == v for k, v in want.items()))
    if "port_count" in shape:
        rows = rows.filter(pl.col("port_count") == shape["port_count"])
    return rows.row(0, named=True) if rows.height else None


def member_table(points: pl.DataFrame, labels: Mapping[str, str] | None = None) -> pl.DataFrame:
    """The points as the report shows them: name, shape, space, measured, model, errno, and
    the run id last."""
    if points.is_empty():
        return points
    labels = labels or {}
    return points.select(
        pl.col("run_id").replace_strict(dict(labels), default=pl.col("run_id"),
                                        return_dtype=pl.Utf8).alias("point"),
        pl.col("bind_mode").alias("bind mode"),
        pl.col("server_ports").alias("server ports"),
        pl.col("server_addrs").alias("server addresses"),
        pl.col("client_addrs").alias("client addresses"),
        pl.col("port_count").alias("pool"),
        pl.col("space").alias("4-tuple space"),
        pl.col("connections_total").alias("connections"),
        pl.col("predicted_total").alias("model"),
        pl.col("errno").alias("stopped by"),
        pl.col("run_id").alias("run id"))


MEMBERS = ("server_ports", "server_addrs", "client_addrs")


def _common_pool(points: pl.DataFrame) -> tuple[int, pl.DataFrame, dict | None]:
    """(the most common pool size, the points of that pool, its one-destination point)."""
    pool = points["port_count"].mode().sort()[0]
    at = points.filter(pl.col("port_count") == pool)
    return pool, at, find(at, port_count=pool)


def alone(at: pl.DataFrame, mode: str, member: str) -> pl.DataFrame:
    """Points of ``mode`` where only ``member`` is above 1, largest last."""
    return at.filter((pl.col("bind_mode") == mode) & (pl.col(member) > 1)
                     & pl.all_horizontal(pl.col(k) == 1 for k in MEMBERS if k != member)
                     ).sort(member)


def member_sentences(points: pl.DataFrame) -> list[str]:
    """What each member buys, per bind mode, from the measured points (one pool size: the
    most common one)."""
    if points.is_empty():
        return []
    pool, at, base = _common_pool(points)
    out = []
    if base:
        out.append(f"One client address, one server address and port, plain connect(): "
                   f"{number(base['connections_total'])} connections of a {pool:,}-port pool, "
                   f"stopped by {base['errno']}.")
    for mode in (fourtuple.CONNECT, fourtuple.BIND, fourtuple.BIND_NO_PORT):
        parts, errnos = [], []
        one = find(at, port_count=pool, bind_mode=mode)
        if one:
            errnos.append(one["errno"])
        for key, label in zip(MEMBERS, ("server ports", "server addresses",
                                         "client addresses")):
            for row in alone(at, mode, key).iter_rows(named=True):
                parts.append(f"{row[key]} {label}: {number(row['connections_total'])}")
                errnos.append(row["errno"])
        if not parts and not one:
            continue
        head = f"With {mode}" + (f" (one destination: {number(one['connections_total'])})"
                                 if one else "")
        stopped = ", ".join(dict.fromkeys(e for e in errnos if e)) or "nothing recorded"
        out.append(f"{head}: " + ("; ".join(parts) or "no other point")
                   + f" — stopped by {stopped}.")
    return out


def claim_sentences(points: pl.DataFrame, runs: pl.DataFrame | None = None,
                    labels: Mapping[str, str] | None = None) -> list[str]:
    """The verdict on Release It!'s "several virtual IPs to pass 64,511 connections", from
    the measured points (``runs``: every run, for the several-client case)."""
    if points.is_empty():
        return []
    pool, at, base = _common_pool(points)
    out = []
    addrs = alone(at, fourtuple.CONNECT, "server_addrs")
    if base and addrs.height:
        row = addrs.row(-1, named=True)
        out.append(
            f"Needed, in one case: a single client address talking to a single server "
            f"address and port is capped at its port pool ({number(base['connections_total'])} "
            f"here, {base['errno']}); {row['server_addrs']} server addresses lift it to "
            f"{number(row['connections_total'])}, "
            f"{row['connections_total'] / base['connections_total']:.1f} times — the book's "
            "advice is right for a proxy, load balancer or connection pool with one source "
            "address.")
    ports = alone(at, fourtuple.CONNECT, "server_ports")
    if ports.height:
        row = ports.row(-1, named=True)
        out.append(f"Not the only way: {row['server_ports']} server ports on one address give "
                   f"{number(row['connections_total'])} just the same — the kernel needs a unique "
                   "4-tuple, not a unique port or address.")
    sources = alone(at, fourtuple.BIND_NO_PORT, "client_addrs")
    if sources.height:
        row = sources.row(-1, named=True)
        out.append(f"More client addresses work too, when the client binds them with "
                   f"IP_BIND_ADDRESS_NO_PORT: {row['client_addrs']} source addresses, "
                   f"{number(row['connections_total'])} connections toward one server port.")
    plain = find(at, port_count=pool, client_addrs=2)
    if plain:
        out.append(f"Extra client addresses do nothing for plain connect(): with 2 the client "
                   f"still holds {number(plain['connections_total'])} "
                   "(the route picks one source).")
    bound = at.filter((pl.col("bind_mode") == fourtuple.BIND) & (pl.col("client_addrs") == 1)
                      & ((pl.col("server_addrs") > 1) | (pl.col("server_ports") > 1)))
    if bound.height:
        row = bound.sort("space", descending=True).row(0, named=True)
        out.append(
            f"Not enough, in another: a client that calls bind((addr, 0)) before connect() "
            f"gets its port before the destination is known, so {row['server_addrs']} server "
            f"address(es) x {row['server_ports']} port(s) still give "
            f"{number(row['connections_total'])}, stopped by {row['errno']} at bind(): there "
            "only more source addresses (or IP_BIND_ADDRESS_NO_PORT) help.")
    many = most_on_one_server_port(runs)
    if many:
        out.append(f"Not needed for the server to hold many connections: every client address "
                   f"brings its own pool toward the same server address and port — "
                   f"{many['clients']} client containers held {number(many['connections_total'])} "
                   f"on one server port here "
                   f"(*{render.md_escape((labels or {}).get(many['run_id'], many['run_id']))}*); "
                   f"the book's {BOOK_PORTS:,} is "
                   "a limit per client address, not per server.")
    return out


def most_on_one_server_port(runs: pl.DataFrame | None) -> dict | None:
    """The finished run with the most connections, among those with several client
    containers and one server address and port."""
    if runs is None or runs.is_empty():
        return None
    rows = (_defaults(runs)
            .filter((pl.col("status") == STATUS_OK) & (pl.col("clients") > 1)
                    & (pl.col("server_addrs") == 1) & (pl.col("server_ports") == 1))
            .sort("connections_total", descending=True))
    return rows.row(0, named=True) if rows.height else None


def chart_frame(points: pl.DataFrame) -> pl.DataFrame:
    """Connections per client address against its 4-tuple space, by bind mode."""
    if points.is_empty():
        return points
    return points.select("run_id", "bind_mode", "space", "per_address", "server_ports",
                         "server_addrs", "client_addrs", "errno")


# --- The sections -----------------------------------------------------------------------------

def tuple_members(d: Data) -> Blocks:
    out = Blocks()
    points = tuple_points(d.runs, d.clients)
    if not varies_tuple(points):
        return out.md("No point of this sweep varies the 4-tuple; `config/fourtuple.yaml` "
                      "has them all.")
    out.chart(charts.tuple_space(chart_frame(points), d.labels))
    for sentence in member_sentences(points):
        out.md(sentence)
    return out.table(member_table(points, d.labels))


def book_claim(d: Data) -> Blocks:
    claim = claim_sentences(tuple_points(d.runs, d.clients), d.runs, d.labels)
    return Blocks().md(bullets(claim) if claim else
                       "This sweep has no point that tests the claim; "
                       "`config/fourtuple.yaml` has them.")
