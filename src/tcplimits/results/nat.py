"""The dataset's columns of a run behind a NAT (run.json "nat", issue 16): nat_* in
runs.parquet, null for a direct run."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

NAT_SCHEMA: dict[str, pl.DataType] = {
    "nat_predicted_total": pl.Int64,     # model: every full pool filled to its last port
    "nat_predicted_low": pl.Int64,       # model: each full pool short by its search bound
    "nat_pool": pl.Int64,                # ports per NAT address and destination
    "nat_port_range": pl.Utf8,           # the NAT's range (MASQUERADE's default: 1024-65535)
    "nat_direct_total": pl.Int64,        # model: the same clients without the NAT
    "nat_addrs_used": pl.Int64,          # NAT addresses the hash gave the clients
    "nat_pools_full": pl.Int64,          # model: (NAT address, destination) pools filled
    "nat_agrees": pl.Boolean,            # the verdict: within the model's span
    "nat_verdict": pl.Utf8,              # the verdict's sentence
    "nat_insert_failed": pl.Int64,       # router's conntrack insert_failed, before -> held
    "nat_drop": pl.Int64,                # router's conntrack drop, before -> held
    "nat_conntrack_held": pl.Int64,      # router's conntrack entries with the connections held
    "nat_conntrack_after": pl.Int64,     # ... once the clients had reset theirs
    "nat_time_wait_timeout_s": pl.Int64, # router's nf_conntrack_tcp_timeout_time_wait
    "nat_peers": pl.Utf8,                # the server's peers as JSON: [{addr, connections,
                                         # port_lo, port_hi, server_ports}]
    "nat_churn_rate": pl.Float64,        # churn model through the NAT: per s, all clients,
                                         # once the pool has turned over
    "nat_churn_low": pl.Float64,         # ... its span: the most 1 s retransmits
    "nat_churn_high": pl.Float64,        # ... the fewest
    "nat_churn_connections": pl.Int64,   # model: connections over the run's duration,
                                         # the first pass through the pool included
    "nat_churn_connections_low": pl.Int64,   # ... its span: the most 1 s retransmits
    "nat_churn_connections_high": pl.Int64,  # ... the fewest
    "nat_churn_limit": pl.Utf8,          # nat_paws, nat_open, or the direct churn limit
    "nat_churn_turnover": pl.Float64,    # per pool: above it, reused ports meet TIME_WAIT
}


def nat_columns(record: dict) -> dict[str, Any]:
    """run.json's "nat" block as nat_* columns ({} for a direct run)."""
    nat = record.get("nat")
    if not isinstance(nat, dict):
        return {}
    pred = nat.get("prediction") or {}
    verdict = nat.get("verdict") or {}
    counters = nat.get("counters") or {}
    groups = pred.get("groups") or []
    churn = nat.get("churn_prediction") or {}
    return {
        "nat_predicted_total": pred.get("total"),
        "nat_predicted_low": pred.get("low"),
        "nat_port_range": pred.get("port_range"),
        "nat_direct_total": pred.get("direct_total"),
        "nat_addrs_used": len({g.get("nat_addr") for g in groups}) if groups else None,
        "nat_pools_full": sum(1 for g in groups if g.get("full")) if groups else None,
        "nat_agrees": verdict.get("agrees"),
        "nat_verdict": verdict.get("sentence"),
        "nat_insert_failed": verdict.get("insert_failed"),
        "nat_drop": verdict.get("drop"),
        "nat_conntrack_held": (counters.get("held") or {}).get("count"),
        "nat_conntrack_after": (counters.get("after") or {}).get("count"),
        "nat_time_wait_timeout_s": (nat.get("router") or {}).get("time_wait_timeout_s"),
        "nat_peers": json.dumps(nat.get("peers")) if nat.get("peers") is not None else None,
        "nat_pool": pred.get("pool", churn.get("pool")),
        "nat_churn_rate": churn.get("rate"),
        "nat_churn_low": churn.get("low"),
        "nat_churn_high": churn.get("high"),
        "nat_churn_connections": churn.get("connections"),
        "nat_churn_connections_low": churn.get("connections_low"),
        "nat_churn_connections_high": churn.get("connections_high"),
        "nat_churn_limit": churn.get("limit"),
        "nat_churn_turnover": churn.get("turnover_rate"),
    }
