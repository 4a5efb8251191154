"""Predict a churn point (pure, no I/O): the open-close rate a client container can sustain
toward its destinations, and when and with which errno it stops when asked for more.

Kernel facts behind it, measured on this machine (kernel 6.18; README, "Churn"):
- The end that closes first keeps the connection in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN,
  compiled in, no sysctl). A client's TIME_WAIT socket keeps its port from connect() toward
  the same destination meanwhile: a pool of R ports sustains R / 60 s per destination, and a
  faster client stops with EADDRNOTAVAIL after exactly R connections (measured: 1,000 of a
  1,000-port range in 0.24 s, then EADDRNOTAVAIL).
- net.ipv4.tcp_tw_reuse=1 lets connect() take a TIME_WAIT port once it is
  net.ipv4.tcp_tw_reuse_delay old (1,000 ms by default; per namespace) and only with TCP
  timestamps on: the bound becomes R / 1 s (measured: 800/s sustained on 1,000 ports; 1,500/s
  stopped after 1,000 connections; timestamps off: stopped like no reuse). The default, 2,
  reuses on loopback only, which container traffic is not. Below R/2 per second only one
  parity of the range is used (measured: 500 TIME_WAIT sockets at 400/s, ~1,000 at 800/s).
- When the server closes first the client's port is free as soon as its own close is acked:
  no port bound, the client never stops; the loop's speed (CPU) sets the rate. TIME_WAIT sits
  on the server, one socket per 4-tuple; the next SYN on the same 4-tuple is accepted (its
  sequence number and timestamp are newer). connect() takes the free ports of one parity
  first, so the server holds about half the range per client and destination (measured 500
  of 1,000).
More destinations (server ports or addresses) multiply the pool: the 4-tuple must be unique,
not the port. Which members count depends on how the client gets its port (fourtuple):
- connect() and bind-no-port pick it at connect(), per 4-tuple: each destination (and with
  bind-no-port each source address) is a pool of R, and tcp_tw_reuse applies to each.
- bind((addr, 0)) picks it before the destination is known, among ports no socket on that
  address holds, TIME_WAIT sockets included (inet_csk_bind_conflict; only
  net.ipv4.ip_autobind_reuse, off by default, relaxes it): one pool of R per source address
  whatever the destinations, tcp_tw_reuse never helps, and the stop is EADDRINUSE at bind().
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tcplimits.model import fourtuple
from tcplimits.config.params import RunParams

TIME_WAIT_S = 60.0          # TCP_TIMEWAIT_LEN
TW_REUSE_DELAY_S = 1.0      # net.ipv4.tcp_tw_reuse_delay default (ms in the sysctl)
DURATION = "DURATION"       # the agents' stop reason for a loop that ran its full duration

# What binds a churn point.
TIME_WAIT = "time_wait"          # client TIME_WAIT ports, 60 s each
REUSE_DELAY = "tw_reuse_delay"   # client TIME_WAIT ports, reusable after the delay
RATE = "rate"                    # the asked rate is sustainable: the client paces itself
LOOP = "loop"                    # nothing in the kernel: the loop's own speed (CPU)

# An observed stop count agrees with the model within this (ports held by others come and go).
STOP_TOLERANCE_ABS = 2
STOP_TOLERANCE_REL = 0.01
# A paced loop "holds" its rate when it reaches this share of it.
RATE_HELD = 0.95


@dataclass(frozen=True)
class ChurnPrediction:
    closer: str
    reuse: bool                    # tcp_tw_reuse takes effect (1, with timestamps)
    pool: list[int]                # per client container: pools x free ports (fourtuple)
    port_hold_s: float | None      # how long a closed connection keeps its port; None: not at all
    sustainable_rate: list[float | None]  # per container, per s; None: no port bound
    asked_rate: float | None       # per container (procs x rate); None for max
    stops: bool | None             # None: with rate max, whether the loop outpaces the bound
    stop_after: list[int | None]   # connections per container when it stops
    stop_at_s: list[float | None]
    errno: str | None
    limit: str                     # time_wait, tw_reuse_delay, rate or loop
    client_time_wait: list[int]    # TIME_WAIT sockets per client container, steady state
    server_time_wait: int          # TIME_WAIT sockets on the server, steady state

    def to_dict(self) -> dict:
        return asdict(self)


def reuse_applies(params: RunParams, timestamps: bool = True) -> bool:
    """tcp_tw_reuse lets this point's connect() take a client TIME_WAIT port: mode 1, or mode
    2 (the kernel's default) toward loopback addresses; TCP timestamps on; and the port chosen
    by connect() (bind((addr, 0)) never picks a port a TIME_WAIT socket holds)."""
    if params.timestamps is not None:
        timestamps = params.timestamps != 0
    loopback = params.network == "loopback"
    return (timestamps and params.bind_mode != fourtuple.BIND
            and (params.tw_reuse == 1 or (params.tw_reuse == 2 and loopback)))


def predict(params: RunParams, *, held_ports: Sequence[int | Sequence[Mapping]] | None = None,
            loop_rate: float | None = None, time_wait_s: float = TIME_WAIT_S,
            reuse_delay_s: float = TW_REUSE_DELAY_S,
            timestamps: bool = True) -> ChurnPrediction:
    """The churn model for one point. ``held_ports[i]``: ports of the range already held in
    client i's namespace (a count, or the sockets: what they cost depends on the bind mode,
    see fourtuple.held_cost); ``loop_rate``: connections per second one process reaches when
    unpaced (the run's own measurement, or a benchmark's), used for rate max. The point's
    own tw_reuse_delay and timestamps, when set, replace ``reuse_delay_s`` and ``timestamps``.

    The client spreads round-robin over its pools (fourtuple.pools: destinations with
    connect(), source addresses with bind(), both with bind-no-port), so each pool sees the
    container's rate divided by their number, and all run dry together."""
    held = list(held_ports) if held_ports is not None else [0] * params.clients
    units = fourtuple.pools(params.bind_mode, params.server_addrs, params.server_ports,
                            params.client_addrs)
    pool = [fourtuple.port_capacity(params.port_count, params.bind_mode,
                                    server_addrs=params.server_addrs,
                                    server_ports=params.server_ports,
                                    client_addrs=params.client_addrs, held=h) for h in held]
    per_pool = [p // units for p in pool]  # one pool's free ports
    per_proc = params.rate_per_s if params.rate_per_s is not None else loop_rate
    asked = None if per_proc is None else params.procs * float(per_proc)
    asked_pool = None if asked is None else asked / units
    if params.closer == "server":
        if params.bind_mode == fourtuple.BIND:
            # bind((addr, 0)) starts at a random port of the opposite parity to connect()'s
            # each time: the server's TIME_WAIT holds the distinct ports drawn in 60 s
            half = [u // 2 for u in per_pool]
            tw_of = [h if asked_pool is None else
                     round(h * (1 - math.exp(-asked_pool * time_wait_s / h))) if h else 0
                     for h in half]
        else:
            # connect() walks the ports of one parity in turn, each reused once the walk
            # comes back to it
            half = [(u + 1) // 2 for u in per_pool]
            tw_of = [h if asked_pool is None else min(h, round(asked_pool * time_wait_s))
                     for h in half]
        return ChurnPrediction(
            closer="server", reuse=False, pool=pool, port_hold_s=None,
            sustainable_rate=[None] * len(pool), asked_rate=asked, stops=False,
            stop_after=[None] * len(pool), stop_at_s=[None] * len(pool), errno=None,
            limit=LOOP if params.rate_per_s is None else RATE,
            client_time_wait=[0] * len(pool), server_time_wait=units * sum(tw_of))
    if params.tw_reuse_delay is not None:  # the point sets the delay (ms) itself
        reuse_delay_s = params.tw_reuse_delay / 1000
    reuse = reuse_applies(params, timestamps)
    hold = reuse_delay_s if reuse else time_wait_s
    bound = [p / hold for p in pool]
    if asked is None:
        stops = None
    else:
        stops = any(asked > b for b in bound)
    stop_after: list[int | None] = []
    stop_at: list[float | None] = []
    tw: list[int] = []
    for p, u, b in zip(pool, per_pool, bound):
        over = asked is None or asked > b
        stop_after.append(p if over else None)
        stop_at.append(p / asked if over and asked else None)
        if over:
            tw.append(p)
        elif reuse and asked_pool * hold <= (u + 1) // 2:
            # connect() scans one parity first and takes a reusable TIME_WAIT port there:
            # the other half of the range is never touched
            tw.append(units * min((u + 1) // 2, round(asked_pool * time_wait_s)))
        else:
            tw.append(min(p, round(asked * time_wait_s)))
    errno = fourtuple.POOL_ERRNO[params.bind_mode]
    return ChurnPrediction(
        closer="client", reuse=reuse, pool=pool, port_hold_s=hold, sustainable_rate=bound,
        asked_rate=asked, stops=stops, stop_after=stop_after, stop_at_s=stop_at,
        errno=errno if stops is not False else None,
        limit=(REUSE_DELAY if reuse else TIME_WAIT) if stops is not False else RATE,
        client_time_wait=tw, server_time_wait=0)


def stop_tolerance(expected: int) -> int:
    return max(STOP_TOLERANCE_ABS, round(STOP_TOLERANCE_REL * expected))


@dataclass(frozen=True)
class ChurnVerdict:
    """One churn run against the model."""

    run_id: str
    agrees: bool
    connections: int               # all client processes together
    rate: float                    # connections per second the clients sustained together
    stopped: bool
    errnos: dict[str, int]         # stop reason -> client processes
    stopped_at_s: float | None     # the first process's stop, when one stopped on an error
    prediction: ChurnPrediction
    sentence: str

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt_rate(rate: float | None) -> str:
    return "unbounded" if rate is None else f"{rate:,.0f}/s"


def verdict(run_id: str, params: RunParams, clients: Sequence[Mapping[str, Any]], *,
            seconds: Sequence[Mapping[str, Any]] = ()) -> ChurnVerdict:
    """Set a finished churn run against the model. ``clients``: its client-process rows
    (client, proc, connections, error, elapsed_s, held_ports, held_other_addr); ``seconds``:
    its per-second rows (client, proc, second since the process started, opened), when
    known. For rate max the run's own loop speed (its fastest second) decides whether the
    bound is crossed."""
    held = [0] * params.clients
    per_client = [0] * params.clients
    errnos: dict[str, int] = {}
    stops: list[float] = []
    stop_of: dict[int, float] = {}  # client container -> its first stop
    elapsed_of: dict[tuple[int, int], float] = {}
    elapsed = 0.0
    for row in clients:
        i = int(row["client"]) - 1
        if 0 <= i < params.clients:
            held[i] = max(held[i], fourtuple.held_from_counts(
                params.bind_mode, int(row.get("held_ports") or 0),
                int(row.get("held_other_addr") or 0)))
            per_client[i] += int(row.get("connections") or 0)
        name = row.get("error") or "none"
        errnos[name] = errnos.get(name, 0) + 1
        took = float(row.get("elapsed_s") or 0.0)
        elapsed_of[(int(row["client"]), int(row.get("proc") or 1))] = took
        elapsed = max(elapsed, took)
        if name != DURATION:
            stops.append(took)
            stop_of[i] = min(took, stop_of.get(i, took))
    total = sum(per_client)
    rate = total / elapsed if elapsed else 0.0
    loop = None
    if params.rate_per_s is None and elapsed:
        loop = max(rate / (params.clients * params.procs), peak_rate(seconds, elapsed_of))
    pred = predict(params, held_ports=held, loop_rate=loop)
    stopped = bool(stops)
    stopped_at = min(stops) if stops else None
    if pred.stops:
        # Ports closed more than port_hold_s before the stop were free again: a loop whose
        # pace varied gets that many more connections before the pool runs dry.
        again = [released(seconds, i + 1, stop_of[i] - pred.port_hold_s) if i in stop_of
                 else (0, 0) for i in range(params.clients)]
        near = all(w + lo - stop_tolerance(w) <= got <= w + hi + stop_tolerance(w)
                   for got, w, (lo, hi) in zip(per_client, pred.stop_after, again)
                   if w is not None)
        agrees = stopped and set(errnos) == {pred.errno} and near
        lo, hi = sum(a[0] for a in again), sum(a[1] for a in again)
        extra = ("" if not hi else f" + {hi:,}" if lo == hi else
                 f" + {'up to ' if not lo else f'{lo:,}–'}{hi:,}")
        extra += " whose ports were free again before the stop" if hi else ""
        model = (f"model: stop with {pred.errno} after {sum(pred.stop_after):,}{extra} "
                 f"connections ({_pool_words(params, pred)} sustain "
                 f"{_fmt_rate(sum(pred.sustainable_rate))} against "
                 f"{_fmt_rate(pred.asked_rate and pred.asked_rate * params.clients)} "
                 f"{'asked' if params.rate_per_s is not None else 'reached (rate max)'})")
        seen = (f"stopped with {', '.join(sorted(errnos))} after {total:,} connections at "
                f"{stopped_at:.2f} s" if stopped else
                f"did not stop: {total:,} connections at {rate:,.0f}/s")
    else:
        # a paced loop should hold its rate; an unpaced one (max) has none to hold
        target = (None if params.rate_per_s is None or pred.asked_rate is None
                  else pred.asked_rate * params.clients)
        held_rate = target is None or rate >= RATE_HELD * target
        agrees = not stopped and held_rate
        why = ("the server closes first, so the client's ports are free again at once"
               if params.closer == "server" else
               f"{_pool_words(params, pred)} sustain {_fmt_rate(sum(pred.sustainable_rate))}")
        model = f"model: no stop ({why})"
        if stopped:
            seen = (f"stopped with {', '.join(sorted(k for k in errnos if k != DURATION))} "
                    f"after {total:,} connections at {stopped_at:.2f} s")
        elif not held_rate:
            seen = (f"ran the full {params.duration:g} s but at {rate:,.0f}/s, below the "
                    f"{target:,.0f}/s asked: the loop itself (CPU) is the bound")
        else:
            seen = f"ran the full {params.duration:g} s at {rate:,.0f}/s"
    sentence = f"{'as predicted' if agrees else 'differs from the model'}: {seen}; {model}."
    return ChurnVerdict(run_id, agrees, total, rate, stopped, errnos, stopped_at, pred, sentence)


def peak_rate(seconds: Sequence[Mapping[str, Any]],
              elapsed: Mapping[tuple[int, int], float]) -> float:
    """The fastest second of any process: connections in a full second, or in the last,
    partial one scaled to a second (when it lasted at least a quarter of a second)."""
    best = 0.0
    for row in seconds:
        key = (int(row["client"]), int(row.get("proc") or 1))
        span = min(1.0, elapsed.get(key, float("inf")) - float(row["second"]))
        if span >= 0.25:
            best = max(best, int(row.get("opened") or 0) / span)
    return best


def released(seconds: Sequence[Mapping[str, Any]], client: int,
             before: float) -> tuple[int, int]:
    """(at least, at most) connections a client container opened before ``before`` seconds:
    their ports had left TIME_WAIT (or become reusable) by then. Per-second counts leave the
    second that straddles ``before`` open: all of it or none."""
    low = high = 0
    for row in seconds:
        if int(row["client"]) != client:
            continue
        start = float(row["second"])
        if start + 1 <= before:
            low += int(row.get("opened") or 0)
            high += int(row.get("opened") or 0)
        elif start < before:
            high += int(row.get("opened") or 0)
    return low, high


def _pool_words(params: RunParams, pred: ChurnPrediction) -> str:
    pool = sum(pred.pool)
    hold = pred.port_hold_s
    what = "until tcp_tw_reuse_delay lets connect() reuse it" if pred.reuse else "in TIME_WAIT"
    if params.tw_reuse == 1 and not pred.reuse and params.bind_mode == fourtuple.BIND:
        what += " (tcp_tw_reuse does not help bind(), which never picks a TIME_WAIT port)"
    units = fourtuple.pools(params.bind_mode, params.server_addrs, params.server_ports,
                            params.client_addrs)
    if units == 1 and params.server_addrs * params.server_ports * params.client_addrs == 1:
        return f"{pool:,} ports, each held {hold:g} s {what},"
    phrase = fourtuple.pools_phrase(params.bind_mode, params.server_addrs,
                                    params.server_ports, params.client_addrs)
    return (f"{params.port_count:,} ports{phrase} ({pool:,} in all), each held {hold:g} s "
            f"{what},")


def run_record(run_id: str, params: RunParams, clients: Sequence[Mapping[str, Any]],
               held_ports: Sequence[int | Sequence[Mapping]], *, finished: bool,
               seconds: Sequence[Mapping[str, Any]] = ()) -> dict:
    """run.json's "churn" block: the prediction before the run and the verdict after it
    (when the run finished; its sentence explains it)."""
    pred = predict(params, held_ports=held_ports)
    out: dict[str, Any] = {"prediction": pred.to_dict(), "verdict": None}
    if finished:
        out["verdict"] = verdict(run_id, params, clients, seconds=seconds).to_dict()
    return out
