"""The report's section "Real servers" (issue 21): nginx, nginx as a TCP proxy and Redis, each
run's held count against tcplimits.model.servers, what bound it, what the clients saw (their
errno, or connections accepted and then closed, with the server's message), the server's own
log line at its limit and the setting that raises it. Every number is read from the dataset
(realserver.parquet, clients.parquet, runs.parquet); every string a server wrote is escaped
(render.html_table, render.html_list)."""

from __future__ import annotations

import json
from typing import Any, Mapping

import polars as pl

from tcplimits.config.params import FIELDS, port_count
from tcplimits.model import servers as server_model
from tcplimits.report import render
from tcplimits.report.blocks import Blocks, plural

COMMAND = "snakemake --cores 4 --configfile config/servers.yaml"
SETTINGS = ("worker_connections", "worker_processes", "maxclients", "server_port_range",
            "settle")


def server_rows(tables: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per finished real-server run: its realserver row with the clients' errnos."""
    real = tables.get("realserver")
    if real is None or real.is_empty():
        return pl.DataFrame()
    clients = tables["clients"]
    errnos = (clients.group_by("run_id").agg(pl.col("error").drop_nulls().unique().sort()
                                             .alias("client_errors"))
              if not clients.is_empty() else pl.DataFrame(schema={"run_id": pl.Utf8,
                                                                  "client_errors": pl.List(pl.Utf8)}))
    return real.join(errnos, on="run_id", how="left").sort("server", "run_id")


def setting(row: Mapping[str, Any]) -> str:
    """The settings asked of the server, or Debian's defaults; with what was in force."""
    asked = [f"{k} {row[k]:g}" if isinstance(row[k], float) else f"{k} {row[k]}"
             for k in SETTINGS
             if row.get(k) is not None and row.get(k) != FIELDS[k].default]
    effective = json.loads(row.get("effective") or "{}")
    shown = {k: effective[k] for k in ("worker_connections", "worker_processes", "maxclients")
             if k in effective}
    text = ", ".join(asked) or "Debian's defaults"
    if shown:
        text += " (in force: " + ", ".join(f"{k} {v}" for k, v in shown.items()) + ")"
    return text


def clients_saw(row: Mapping[str, Any]) -> str:
    """What the clients saw: connections closed by the server (with its message), and the
    errno that stopped them."""
    parts = []
    closed = row.get("closed_by_peer") or 0
    if closed:
        message = (row.get("peer_message") or "").strip()
        parts.append(f"{closed:,} accepted, then closed "
                     + (f'with "{message}"' if message else "without a message"))
    errors = row.get("client_errors") or []
    if errors:
        parts.append("stopped with " + ", ".join(errors))
    return "; ".join(parts) or "-"


def table(rows: pl.DataFrame) -> pl.DataFrame:
    out = []
    for r in rows.iter_rows(named=True):
        low, high = r.get("predicted_low"), r.get("predicted_high")
        out.append({
            "server": r["server"],
            "version": r.get("package_version"),
            "setting": setting(r),
            "opened": r.get("opened"),
            "held": r.get("held"),
            "predicted": (f"{low:,}" if low == high else f"{low:,}-{high:,}")
            if low is not None and high is not None else None,
            "as predicted": "yes" if r.get("agrees") else "no",
            "bound by": r.get("bound"),
            "clients saw": clients_saw(r),
            "server's log at the limit": r.get("limit_log") or "(nothing logged)",
            "raise it": r.get("raise_with"),
        })
    return pl.DataFrame(out)


def explanations(rows: pl.DataFrame) -> list[str]:
    """One sentence per run and cause, from tcplimits.model.servers.judge."""
    said = []
    for r in rows.iter_rows(named=True):
        pool = port_count(r.get("server_port_range") or server_model.DEFAULT_PORT_RANGE)
        pred = server_model.predict_from_facts(
            r["server"], int(r["opened"] or 0), workers=int(r.get("workers") or 1),
            effective=json.loads(r.get("effective") or "{}"),
            server_nofile=int(r.get("resolved_server_nofile") or 0), upstream_pool=pool,
            settle_s=float(r.get("settle") or 0))
        log = [{"line": r["limit_log"], "count": r["limit_log_count"]}] if r.get("limit_log") \
            else []
        verdict = server_model.judge(pred, int(r["held"] or 0), int(r["opened"] or 0),
                                     int(r["closed_by_peer"] or 0), r.get("peer_message"), log)
        said += [f"{r['server']} ({r['run_id']}): {why}" for why in verdict.explanations]
    return said


def headline(rows: pl.DataFrame) -> str:
    agree = rows.filter(pl.col("agrees")).height
    servers = ", ".join(sorted(set(rows["server"].to_list())))
    return (f"{plural(rows.height, 'real-server point')} ({servers}): {agree} held what "
            f"tcplimits.model.servers predicted, {rows.height - agree} did not.")


def real_servers(d) -> Blocks:
    """The section's blocks, from the report's data (its realserver and
    clients tables)."""
    rows = server_rows({"realserver": d.realserver, "clients": d.clients})
    out = Blocks()
    if rows.is_empty():
        return out.md(f"This run set has no finished real-server point. `{COMMAND}` runs "
                      "nginx, the proxy and Redis at their shipped defaults and at small "
                      "limits.")
    out.md(headline(rows))
    out.table(table(rows))
    out.html(render.html_list(explanations(rows)))
    return out
