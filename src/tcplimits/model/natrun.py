"""A run behind the NAT set against tcplimits.model.nat (pure): run.json's nat prediction and
verdict, the dataset row's comparison (hold.compare_run's answer for nat gateway), and churn
through the NAT, which the hold model does not judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcplimits.config.params import RunParams
from tcplimits.model.compare import Comparison
from tcplimits.model.hold import client_terms
from tcplimits.model.nat import (CONNTRACK_TIME_WAIT_S, GATEWAY, NAT, NAT_ERRNO, NatPrediction,
                                 pool_size, predict)

TOLERANCE_ABS = 2  # processes racing for the last ports of several pools


def counter_delta(counters: Mapping[str, Any], name: str, since: str = "before",
                  until: str = "held") -> int | None:
    """How much the router's /proc/net/stat/nf_conntrack counter ``name`` rose between two
    moments of run.json's nat.counters; None where either is missing."""
    a = ((counters.get(since) or {}).get("stat") or {}).get(name)
    b = ((counters.get(until) or {}).get("stat") or {}).get(name)
    return None if a is None or b is None else b - a


# Churn through the NAT (measured here, kernel 6.18, a 100-port NAT pool, 2,000-port client
# range, 200/s for 10 s): the hypothesis "pool / nf_conntrack_tcp_timeout_time_wait" (0.83/s)
# does not hold. Client closing first: 2,000 connections, no drop: in its last 32 probes the
# NAT evicts a TIME_WAIT entry whose sequence number the new SYN has passed
# (nf_nat_used_tuple_harder), so closed entries do not hold the pool. Server closing first:
# 283 connections at 28/s, no drop, no error: a reused NAT port meets the server's own
# TIME_WAIT socket for that 4-tuple, and the SYN waits for a retransmit.
CHURN_CLOSED_BOUND = None  # closed connections bound no NAT pool (eviction)


def churn_sentence(params: RunParams, connections: int, insert_failed: int | None) -> str:
    """Churn through the NAT, in words: what bounds it and whether the NAT dropped SYNs."""
    pool = pool_size(params)
    rate = connections / params.duration if params.duration else 0.0
    dropped = (f"the NAT dropped {insert_failed:,} SYN(s)" if insert_failed
               else "the NAT dropped no SYN")
    if params.closer == "client":
        why = (f"closed connections hold no NAT port: their TIME_WAIT entries "
               f"({CONNTRACK_TIME_WAIT_S} s) are evicted when the pool is full, so "
               f"{pool:,} ports did not bound the rate to {pool / CONNTRACK_TIME_WAIT_S:.2f}/s")
    else:
        why = ("the server keeps TIME_WAIT for each (NAT address, NAT port) it closed, and a "
               "reused NAT port's SYN meets it and waits for a retransmit")
    return (f"{connections:,} opened and closed through a {pool:,}-port NAT pool in "
            f"{params.duration:g} s ({rate:,.0f}/s, {params.rate} asked); {dropped}; {why}")


def run_record(params: RunParams, held: Sequence[Sequence[Mapping] | int], own_errno: str | None,
               client_addrs: Sequence[str | Sequence[str]], server_addrs: Sequence[str],
               nat_addrs: Sequence[str], server_ports: Sequence[int],
               clients: Sequence[Mapping[str, Any]],
               counters: Mapping[str, Any]) -> dict[str, Any]:
    """run.json's nat "prediction" and "verdict": the model with each client's own bound
    (its held ports counted), against the clients' count."""
    if params.churn:  # opened and closed: no hold prediction, the churn finding
        observed = sum(int(r.get("connections") or 0) for r in clients)
        drops = counter_delta(counters, "insert_failed")
        return {"prediction": None, "verdict": {
            "connections": observed, "agrees": None, "insert_failed": drops,
            "drop": counter_delta(counters, "drop"),
            "sentence": churn_sentence(params, observed, drops)}}
    own = [client_terms(params, h)[0] for h in held]
    pred = predict(params, own, own_errno, client_addrs, server_addrs, nat_addrs, server_ports)
    observed = sum(int(r.get("connections") or 0) for r in clients)
    errnos: dict[str, int] = {}
    for row in clients:
        name = row.get("error") or "none"
        errnos[name] = errnos.get(name, 0) + 1
    agrees = pred.low - TOLERANCE_ABS <= observed <= pred.total + TOLERANCE_ABS
    expected = sorted({e for e in pred.errnos if e})
    return {"prediction": pred.to_dict(), "verdict": {
        "connections": observed, "errnos": errnos, "agrees": agrees,
        "insert_failed": counter_delta(counters, "insert_failed"),
        "drop": counter_delta(counters, "drop"),
        "sentence": verdict_sentence(params, pred, observed, errnos, expected)}}


def verdict_sentence(params: RunParams, pred: NatPrediction, observed: int,
                     errnos: Mapping[str, int], expected: Sequence[str]) -> str:
    """One sentence: the count through the NAT against the model, and why."""
    full = [g for g in pred.groups if g["full"]]
    used = sorted({g["nat_addr"] for g in pred.groups})
    if full:
        why = (f"{len(full)} full pool(s) of {pred.pool:,} ports ({pred.port_range}) per NAT "
               f"address and destination; the clients' own pools would give "
               f"{pred.direct_total:,}")
    else:
        why = "the clients' own limits, below the NAT's pools"
    span = (f"{pred.total:,}" if pred.low == pred.total
            else f"{pred.low:,} to {pred.total:,}, typically {pred.typical:,} (the NAT's bounded "
                 f"port search drops SYNs while a few ports of a full pool are still free)")
    stops = ", ".join(f"{n} {e}" for e, n in errnos.items())
    return (f"clients held {observed:,} through the NAT, the model {span}: {why}; "
            f"{len(used)} of {len(pred.nat_addrs)} NAT address(es) used (each source address "
            f"hashes to one per destination address); processes stopped: {stops} "
            f"(expected {', '.join(expected) or 'none'})")


def as_prediction(pred: Mapping[str, Any], direct: Mapping[str, Any]) -> dict[str, Any]:
    """run.json's "prediction" for a run behind the NAT: the direct model's, with the NAT's
    count, per-client split, limit and errno (the direct ones stay under "direct")."""
    limit = NAT if pred.get("limit") == NAT else direct.get("limit")
    return {**direct, "total": pred.get("total"), "per_client": pred.get("per_client"),
            "limit": limit, "errno": NAT_ERRNO if limit == NAT else direct.get("errno"),
            "low": pred.get("low"), "direct": dict(direct)}


def limit_sentence(pred: Mapping[str, Any]) -> str:
    """Why the NAT's limit gives the number it does, from run.json's nat prediction."""
    full = [g for g in pred.get("groups") or [] if g.get("full")]
    return (f"the NAT's pool: {pred.get('pool', 0):,} ports ({pred.get('port_range')}) per NAT "
            f"address and destination, shared by every client behind it; {len(full)} pool(s) "
            "full, and a SYN the NAT finds no port for is dropped (ETIMEDOUT)")


@dataclass(frozen=True)
class NatVerdict:
    """A run behind the NAT against the model: ``low`` to ``total`` is the model's span."""

    run_id: str
    observed: int
    total: int
    low: int
    agrees: bool
    sentence: str


def verdict_of(run: Mapping[str, Any]) -> NatVerdict | None:
    """The verdict of a dataset row (its nat_* columns), or None for a direct run or one
    that did not finish."""
    if run.get("nat") != GATEWAY or run.get("nat_predicted_total") is None:
        return None
    if run.get("connections_total") is None:
        return None
    return NatVerdict(str(run["run_id"]), int(run["connections_total"]),
                      int(run["nat_predicted_total"]), int(run.get("nat_predicted_low") or 0),
                      bool(run.get("nat_agrees")), str(run.get("nat_verdict") or ""))


@dataclass(frozen=True)
class NatComparison(Comparison):
    """hold.Comparison for a run behind the NAT: it agrees anywhere in the model's span."""

    low: int = 0

    @property
    def tolerance(self) -> int:
        return max(TOLERANCE_ABS, self.predicted - self.low + TOLERANCE_ABS)


def comparison(run: Mapping[str, Any], clients: Sequence[Mapping[str, Any]] = ()
               ) -> NatComparison | None:
    """A dataset row behind the NAT set against the NAT model (hold.compare_run's answer for
    nat gateway): the verdict the engine recorded, with its sentence as the explanation."""
    v = verdict_of(run)
    if v is None:
        return None
    errnos: dict[str, int] = {}
    for row in clients:
        name = row.get("error") or "none"
        errnos[name] = errnos.get(name, 0) + 1
    limit = run.get("predicted_limit") or NAT
    return NatComparison(v.run_id, v.observed, v.total, v.total, limit,
                         run.get("predicted_errno"), errnos, run.get("server_accepted"),
                         [v.sentence] if v.sentence else [], low=v.low)
