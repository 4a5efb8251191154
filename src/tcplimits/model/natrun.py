"""A run behind the NAT set against tcplimits.model.nat (pure): run.json's nat prediction and
verdict, the dataset row's comparison (hold.compare_run's answer for nat gateway), and churn
through the NAT against natchurn.churn_predict (the churn verdict of such a point is the NAT's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcplimits.config.params import RunParams
from tcplimits.model.compare import Comparison
from tcplimits.model.hold import client_terms
from tcplimits.model import churn
from tcplimits.model.nat import CONNTRACK_TIME_WAIT_S, GATEWAY, NAT, NAT_ERRNO, NatPrediction, predict
from tcplimits.model.natchurn import (NAT_OPEN, PAWS, SERVER_TIME_WAIT_S, NatChurnPrediction,
                                      churn_predict)

TOLERANCE_ABS = 2  # processes racing for the last ports of several pools
RATE_ABOVE = 1.05  # a churn ceiling: the rate of a whole run, its first second included


def counter_delta(counters: Mapping[str, Any], name: str, since: str = "before",
                  until: str = "held") -> int | None:
    """How much the router's /proc/net/stat/nf_conntrack counter ``name`` rose between two
    moments of run.json's nat.counters; None where either is missing."""
    a = ((counters.get(since) or {}).get("stat") or {}).get(name)
    b = ((counters.get(until) or {}).get("stat") or {}).get(name)
    return None if a is None or b is None else b - a


def churn_prediction(params: RunParams, held: Sequence[Sequence[Mapping] | int],
                     client_addrs: Sequence[str | Sequence[str]], server_addrs: Sequence[str],
                     nat_addrs: Sequence[str], server_ports: Sequence[int],
                     loop_rate: float | None = None) -> NatChurnPrediction:
    """The NAT's churn model for a point, with the direct model's rate and limit (the
    clients' own TIME_WAIT) for what the NAT leaves to the clients."""
    direct = churn.predict(params, held_ports=held, loop_rate=loop_rate)
    rate, limit = None, churn.RATE
    if direct.asked_rate is not None:
        count = 0.0
        for after, at in zip(direct.stop_after, direct.stop_at_s):
            if after is not None and at is not None and at < params.duration:
                count, limit = count + after, direct.limit  # its own pool runs dry first
            else:
                count += direct.asked_rate * params.duration
        rate = count / params.duration
    return churn_predict(params, client_addrs, server_addrs, nat_addrs, server_ports,
                         loop_rate=loop_rate, direct_rate=rate, direct_limit=limit)


def _fmt(rate: float | None) -> str:
    return "unbounded" if rate is None else f"{rate:,.0f}/s"


def churn_verdict(params: RunParams, pred: NatChurnPrediction, observed: int,
                  insert_failed: int | None) -> dict:
    """A churn point through the NAT against ``pred``: when the server's TIME_WAIT holds it
    down (nat_paws), the count within the model's span; when the NAT adds no bound, the
    direct model's count: its stop within churn.stop_tolerance, or the asked rate held
    (churn.RATE_HELD)."""
    rate = observed / params.duration if params.duration else 0.0
    dropped = (f"the NAT dropped {insert_failed:,} SYN(s)" if insert_failed
               else "the NAT dropped no SYN")
    if pred.limit == PAWS:
        if pred.connections is not None:
            agrees = pred.connections_low <= observed <= pred.connections_high
        else:  # rate max without the loop's speed: the NAT's ceiling only
            agrees = rate <= (pred.high or 0.0) * RATE_ABOVE
        span = (f"{pred.connections:,} ({pred.connections_low:,} to "
                f"{pred.connections_high:,})" if pred.connections is not None else
                f"at most {pred.high:,.0f}/s")
        why = (f"past {pred.turnover_rate:,.2f}/s per NAT address and destination "
               f"({pred.pool:,} ports / {SERVER_TIME_WAIT_S:g} s) a reused NAT port meets "
               f"the server's TIME_WAIT, which rejects half the SYNs (random timestamp "
               f"offsets per 4-tuple, PAWS); each waits a fast retransmit or a 1 s RTO: "
               f"{pred.rate:,.0f}/s ({pred.low:,.0f} to {pred.high:,.0f}/s) once the pool "
               f"has turned over")
        model = f"model {span} connections: {why}"
    elif pred.limit == NAT_OPEN:
        agrees = bool(insert_failed)
        model = (f"model: more processes open connections at once than the NAT's "
                 f"{pred.pool:,} ports, so it drops SYNs")
    else:
        stops = pred.limit != churn.RATE
        if pred.connections is None:
            agrees = None
        elif stops:  # the client's own pool runs dry: its stop count
            agrees = abs(observed - pred.connections) <= churn.stop_tolerance(pred.connections)
        else:  # the asked rate held (rate max: the loop's fastest second, never passed)
            held = churn.RATE_HELD * pred.connections if params.rate_per_s is not None else 0
            agrees = held <= observed <= pred.connections + churn.STOP_TOLERANCE_ABS
        closed = ("the client closes first" if params.closer == "client" else
                  "the clients' SYNs carry no random timestamp offset")
        own = (f"the clients' own pools stop them after {pred.connections:,}" if stops and
               pred.connections is not None else
               f"{_fmt(pred.rate)} as asked" if pred.connections is not None else "the loop")
        model = (f"model {own}: the NAT adds no bound ({closed}; in its last 32 probes it "
                 f"evicts a closed entry whose sequence number the SYN has passed, so "
                 f"{CONNTRACK_TIME_WAIT_S} s TIME_WAIT entries do not hold the "
                 f"{pred.pool:,}-port pool)")
    sentence = (f"{'as predicted' if agrees else 'differs from the model'}: {observed:,} "
                f"opened and closed through a {pred.pool:,}-port NAT pool in "
                f"{params.duration:g} s ({rate:,.0f}/s); {dropped}; {model}")
    return {"connections": observed, "rate": rate, "agrees": agrees, "sentence": sentence}


def run_record(params: RunParams, held: Sequence[Sequence[Mapping] | int], own_errno: str | None,
               client_addrs: Sequence[str | Sequence[str]], server_addrs: Sequence[str],
               nat_addrs: Sequence[str], server_ports: Sequence[int],
               clients: Sequence[Mapping[str, Any]],
               counters: Mapping[str, Any], loop_rate: float | None = None) -> dict[str, Any]:
    """run.json's nat "prediction" and "verdict": the model with each client's own bound
    (its held ports counted), against the clients' count. A churn point gets the NAT's
    churn model ("churn_prediction") and its verdict; ``loop_rate``: one process's unpaced
    rate (rate max, as the direct churn verdict measured it)."""
    if params.churn:  # opened and closed: the NAT's churn model
        observed = sum(int(r.get("connections") or 0) for r in clients)
        drops = counter_delta(counters, "insert_failed")
        pred = churn_prediction(params, held, client_addrs, server_addrs, nat_addrs,
                                server_ports, loop_rate=loop_rate)
        return {"prediction": None, "churn_prediction": pred.to_dict(), "verdict": {
            **churn_verdict(params, pred, observed, drops),
            "insert_failed": drops, "drop": counter_delta(counters, "drop")}}
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
