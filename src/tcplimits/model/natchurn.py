"""Churn through a source NAT (issue 16): the rate clients sustain through the NAT's port
pool, and what bounds it (pure; the pool and the hash are tcplimits.model.nat's).

Measured, benchmarks/results/nat-churn.json):
- Closed entries bound no pool: with the pool full of TIME_WAIT entries a SYN's last 32
  probes evict one whose sequence number it has passed (half of them: ISNs of different
  ports are unrelated), so the NAT drops nothing; the client closing first keeps its own
  bound (model.churn: its TIME_WAIT, tcp_tw_reuse). Only entries not yet closed hold ports:
  the NAT would drop SYNs if more connections were open at once than the pool has ports.
- The server closing first keeps TIME_WAIT (60 s) per (NAT address, NAT port): a NAT port
  reused within 60 s brings a SYN to that socket. The server takes it when its timestamp is
  newer, but this kernel draws each connection's timestamp offset from its 4-tuple
  (secure_tcp_seq_and_ts_off, tcp_timestamps=1, the default): half the SYNs are older and
  rejected (TcpExt PAWSTimewait). The server answers with an ACK, the client resets (the RST
  ends the TIME_WAIT) and retransmits after TCP_TIMEOUT_MIN (2 jiffies; 9-16 ms measured)
  instead of 1 s; the NAT maps the retransmission anew, and where it lands on another such
  port and is rejected again, it waits a full 1 s RTO. Each process's loop waits for all of
  that. With tcp_timestamps 0 or 2 (no random offset) nothing is rejected: the NAT only
  evicts an entry whose sequence number the SYN has passed, which the server accepts
  (measured, 100 ports, 200/s asked for 8 s: 1,591-1,600 of 1,600 with timestamps 0 or 2,
  184-202 with 1; the server's PAWSTimewait equalled the clients' SYN retransmissions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tcplimits.config.params import RunParams
from tcplimits.model.nat import (CONNTRACK_TIME_WAIT_S, SYN_RTO_S, client_pairs, nat_address,
                                 pool_size)

SERVER_TIME_WAIT_S = 60.0     # TCP_TIMEWAIT_LEN: the server's TIME_WAIT per NAT port
FAST_RETRANSMIT_S = 0.012     # a SYN answered by a bad ACK: TCP_TIMEOUT_MIN + RTT (9-16 ms)
PAWS_REJECTED = 0.5           # SYNs whose random timestamp is older than the TIME_WAIT's
# Rejected SYNs whose retransmission is rejected again and waits a full RTO: measured 5-30%
# (15% typical) over pools of 50-200 ports and 20-200/s (benchmarks/results/nat-churn.json);
# which port the NAT maps the retransmission to decides it, and no formula here predicts it.
AGAIN = (0.05, 0.15, 0.30)    # (fewest, typical, most)
PAWS = "nat_paws"             # the limit: the server's TIME_WAIT on reused NAT ports
NAT_OPEN = "nat_open"         # the limit: more connections open at once than the pool


def paws_rejects(params: RunParams) -> bool:
    """The clients' SYNs carry timestamps with a random offset per 4-tuple (tcp_timestamps 1,
    the kernel's default): a server's TIME_WAIT rejects half of those on a reused NAT port."""
    return params.timestamps in (None, 1)


def live_time_wait_share(pool: int, rate: float) -> float:
    """Share of a pool's SYNs whose NAT port the server still holds in TIME_WAIT, at ``rate``
    per second through the pool. Below pool / 120 s the NAT always finds a port whose entry
    expired (120 s > the server's 60 s); above, the pool is full and it evicts an entry
    pseudo-randomly, whose age is about exponential with mean pool / rate."""
    if rate <= 0 or rate * CONNTRACK_TIME_WAIT_S <= pool:
        return 0.0
    return 1.0 - math.exp(-rate * SERVER_TIME_WAIT_S / pool)


def rejected_delay_s(again: float) -> float:
    """Mean delay of a SYN the server's TIME_WAIT rejected: the fast retransmit, and a 1 s
    RTO for the share ``again`` rejected once more."""
    return FAST_RETRANSMIT_S + again * SYN_RTO_S


@dataclass(frozen=True)
class NatChurnPrediction:
    """Churn through the NAT: the rate the clients sustain together and what bounds it.
    ``rate`` (typical), ``low`` and ``high`` per second for all client processes together
    once the pool has turned over; ``connections`` and its span over the run's duration."""

    closer: str
    pool: int
    pools: int                       # (NAT address, destination) pools the clients use
    turnover_rate: float             # per pool: above it, reused NAT ports meet TIME_WAIT
    asked_rate: float | None         # all processes together; None for rate max, unknown
    rate: float | None
    low: float | None
    high: float | None
    connections: int | None
    connections_low: int | None
    connections_high: int | None
    limit: str                       # nat_paws, nat_open, or the direct model's
    rejected_share: float            # SYNs the server's TIME_WAIT rejects
    delay_s: float                   # mean delay of a rejected SYN (typical)

    def to_dict(self) -> dict:
        return asdict(self)


def churn_predict(params: RunParams, client_addrs: Sequence[str | Sequence[str]],
                  server_addrs: Sequence[str],
                  nat_addrs: Sequence[str], server_ports: Sequence[int],
                  loop_rate: float | None = None, direct_rate: float | None = None,
                  direct_limit: str = "rate") -> NatChurnPrediction:
    """Churn through the NAT. ``loop_rate``: what one process reaches unpaced (the run's own
    fastest second, or None); ``direct_rate``/``direct_limit``: the direct model's rate for
    all processes and its limit (model.churn), which the NAT keeps when the client closes
    first. Each process opens one connection at a time, round-robin over the destinations,
    from the NAT address the hash gives its client (nat_address). A paced loop that fell
    behind runs unpaced until it catches up, so the delays cost rate only where they exceed
    the pacing: a process reaches min(asked, 1 / (loop time + rejected share x delay))."""
    pool = pool_size(params)
    # load[pool]: processes' worth of connections through each (NAT address, destination)
    # pool: a process spreads evenly over its client's (source, destination) pairs
    load: dict[tuple, float] = {}
    for sources in client_addrs:
        pairs = client_pairs(params, sources, server_addrs, server_ports)
        for source, addr, port in pairs:
            g = (nat_address(source, addr, nat_addrs), addr, port)
            load[g] = load.get(g, 0.0) + params.procs / len(pairs)
    per_proc = params.rate_per_s if params.rate_per_s is not None else loop_rate
    n_procs = len(client_addrs) * params.procs
    asked = None if per_proc is None else float(per_proc) * n_procs
    duration, turnover = params.duration, pool / SERVER_TIME_WAIT_S
    if params.closer != "server" or not paws_rejects(params):
        if n_procs > pool:  # each process holds one connection open at a time
            limit, rate = NAT_OPEN, None
        else:
            rate, limit = (direct_rate, direct_limit) if direct_rate is not None else (
                asked, "rate")
        count = None if rate is None else round(rate * duration)
        return NatChurnPrediction(params.closer, pool, len(load), turnover, asked, rate,
                                  rate, rate, count, count, count, limit, 0.0, 0.0)
    # a process's rate r puts r * busiest through its busiest pool
    busiest = max(load.values())
    loop_s = 1.0 / loop_rate if loop_rate else 0.0

    def proc_rate(again: float) -> float:
        """One process's rate once the pool has turned over (the share of live ports
        depends on that rate in turn: bisection)."""
        lo, hi = 0.0, float(per_proc) if per_proc else 1e6
        for _ in range(60):
            mid = (lo + hi) / 2
            share = PAWS_REJECTED * live_time_wait_share(pool, mid * busiest)
            cost = loop_s + share * rejected_delay_s(again)
            lo, hi = (mid, hi) if cost <= 0 or 1.0 / cost > mid else (lo, mid)
        return lo

    def count(r: float) -> int | None:
        if per_proc is None:
            return None
        # until the pool's ports have all been used once, no TIME_WAIT is met
        fill = min(duration, pool / (per_proc * busiest))
        return round(n_procs * (per_proc * fill + r * (duration - fill)))

    most, typical, fewest = (proc_rate(a) for a in AGAIN)
    live = live_time_wait_share(pool, typical * busiest)
    return NatChurnPrediction(
        "server", pool, len(load), turnover, asked, typical * n_procs, fewest * n_procs,
        most * n_procs, count(typical), count(fewest), count(most),
        PAWS if live > 0 else "rate", PAWS_REJECTED * live, rejected_delay_s(AGAIN[1]))


def churn_addresses_needed(rate: float, pool: int, destinations: int = 1) -> int:
    """NAT addresses that keep a churn of ``rate`` per second, the server closing first,
    below the rate at which reused NAT ports meet its TIME_WAIT (pool / 60 s per address
    and destination), when the hash spreads the clients evenly."""
    per_address = pool * destinations / SERVER_TIME_WAIT_S
    return math.ceil(rate / per_address) if rate > 0 else 0
