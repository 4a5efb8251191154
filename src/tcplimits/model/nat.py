"""Clients behind a source NAT (issue 16): what they hold together, who stops and why (pure).

Kernel facts behind it (net/netfilter/nf_nat_core.c, read for kernel 6.x; the figures marked
measured come from tests/engine/test_nat.py on this machine):
- The NAT's port pool belongs to (NAT address, destination address, destination port,
  protocol): every client behind the NAT shares it, whatever each client's own
  ip_local_port_range. MASQUERADE or SNAT without a port range maps a source port >= 1024
  into 1024-65535 (64,512 ports; 600-1023 below 1024, 1-511 below 512) and keeps the client's
  own port when the translated tuple is still unique (get_unique_tuple), so the default pool
  is 64,512 per NAT address and destination, not the clients' 28,232. Measured: three
  clients each binding source ports 300, 700 and 40000 through one MASQUERADE: the first
  kept its ports, the clashing ones became 97 and 480, 943 and 1023, 3721 and 41394. The
  agents' own ranges start at 1024 (PORT_MIN), so only the 1024-65535 pool shows in a run.
- nat_port_range (--to-ports) may start below 1024, from port 1: the NAT writes its ports
  into packets and binds none, so ip_unprivileged_port_start has no say (measured: 500-599,
  two clients, 100 held, every peer port of the server's in 500-599).
- Which NAT address a connection gets is a hash, not a choice among free ones
  (find_best_ips_proto): jhash2 of the client's address seeded with the destination address,
  scaled onto the pool of addresses. Every connection of one client address toward one
  destination address leaves from the same NAT address, full or not: ``nat_addrs`` multiplies
  the pool only across client addresses (and server addresses) that hash apart. A client's
  extra source addresses (client_addrs, bind modes bind and bind-no-port) are translated
  like any other: behind one NAT address they add nothing to the NAT's pool (measured: two
  sources of one client on a 100-port pool hold 100, not 200); with several NAT addresses
  each source hashes on its own, so one client may reach more of them.
- When no port is free the SYN is dropped (the conntrack entry is not inserted:
  /proc/net/stat/nf_conntrack insert_failed and drop): the client retransmits it and ends with
  ETIMEDOUT at its connect timeout, never EADDRNOTAVAIL.
- The port search is bounded (NF_NAT_MAX_ATTEMPTS, "nat: limit port clash resolution
  attempts"): a pool of at most 128 ports is searched whole, so it fills exactly; a larger one
  is probed in rounds of 128, 64, 32, 16 and 8 consecutive ports from random offsets (248 per
  SYN). Near full, the free ports sit between long runs of taken ones (as in any linear
  probing), so SYNs are dropped while some are still free: measured 998 of 1,000 and 9,810
  of 10,000; ``fill_span`` simulates the kernel's search to give the span.
- A closed connection's NAT entry stays nf_conntrack_tcp_timeout_time_wait (120 s, per
  namespace) and keeps its port meanwhile; in the last 32 probes of a round the NAT may evict
  such an entry when the new SYN's sequence number is past the old one's
  (nf_nat_used_tuple_harder).

Churn through the NAT: tcplimits.model.natchurn.
"""

from __future__ import annotations

import ipaddress
import math
import random
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tcplimits.config.params import NAT_PORT_MIN, RunParams, parse_port_range
from tcplimits.model import fourtuple

GATEWAY = "gateway"
# nf_nat_l4proto_unique_tuple without NF_NAT_RANGE_PROTO_SPECIFIED, source port >= 1024.
MASQUERADE_DEFAULT_RANGE = (1024, 65535)
MAX_ATTEMPTS = 128           # NF_NAT_MAX_ATTEMPTS
MIN_ROUND = 16               # a round of fewer attempts ends the search
HARDER_THRESH = MAX_ATTEMPTS // 4   # NF_NAT_HARDER_THRESH: the last probes may evict TIME_WAIT
CONNTRACK_TIME_WAIT_S = 120  # net.netfilter.nf_conntrack_tcp_timeout_time_wait, default
SYN_RTO_S = 1.0              # TCP_TIMEOUT_INIT: the first SYN retransmission, then doubling

NAT = "nat"                  # the limit: the NAT's port pool
NAT_ERRNO = "ETIMEDOUT"


def port_range(params: RunParams) -> tuple[int, int]:
    """The NAT's port range: nat_port_range, or MASQUERADE's own."""
    if params.nat_port_range is None:
        return MASQUERADE_DEFAULT_RANGE
    return parse_port_range(params.nat_port_range, "nat_port_range", NAT_PORT_MIN)


def pool_size(params: RunParams) -> int:
    """Ports of one pool: per NAT address and destination (address, port)."""
    lo, hi = port_range(params)
    return hi - lo + 1


def probes_per_syn(pool: int) -> int:
    """Ports one SYN's search looks at: the whole pool up to 128, else 128 + 64 + 32 + 16 + 8."""
    return sum(search_rounds(pool))


def syns_per_connect(connect_timeout: float) -> int:
    """SYNs a connect() sends by its timeout: at 0 s, then 1, 3, 7, ... s (measured: 3 by a 3 s
    timeout, the router counted 3 drops per client)."""
    n = 1
    while SYN_RTO_S * (2 ** n - 1) <= connect_timeout:
        n += 1
    return n


def search_rounds(pool: int) -> tuple[int, ...]:
    """Consecutive ports each round of one SYN's search probes (nf_nat_l4proto_unique_tuple):
    the whole pool up to 128; else 128, 64, 32, 16, 8, each from a random offset."""
    if pool <= MAX_ATTEMPTS:
        return (pool,)
    out, attempts = [], MAX_ATTEMPTS
    while True:
        out.append(attempts)
        if attempts >= pool or attempts < MIN_ROUND:
            return tuple(out)
        attempts //= 2


def simulate_fill(pool: int, processes: int, syns: int, own_range: tuple[int, int] | None,
                  nat_lo: int, rng: random.Random) -> int:
    """One fill of a pool as the kernel does it: processes take turns, one connect() each;
    a connect tries the client's own port first (``own_range``: its ip_local_port_range, or
    None with --random / --random-fully), then the bounded search, once per SYN; a connect
    whose every SYN finds no port stops its process. Returns the ports taken."""
    used = bytearray(pool)
    rounds, taken, active = search_rounds(pool), 0, processes

    def search() -> int:
        if own_range is not None:
            port = rng.randint(*own_range) - nat_lo
            if 0 <= port < pool and not used[port]:
                return port
        for length in rounds:
            off = rng.randrange(65536) % pool if length < pool else 0
            found = used.find(0, off, min(pool, off + length))
            if found < 0 and off + length > pool:
                found = used.find(0, 0, off + length - pool)
            if found >= 0:
                return found
        return -1

    while active:
        still = 0
        for _ in range(active):
            port = -1
            for _ in range(syns):
                port = search()
                if port >= 0:
                    break
            if port < 0:
                continue
            used[port] = 1
            taken += 1
            if taken >= pool:
                return taken
            still += 1
        active = still
    return taken


def fill_span(params: RunParams, processes: int, trials: int | None = None) -> tuple[int, int]:
    """(low, typical) ports a full pool holds when its clients stop: a pool searched whole
    fills (pool, pool); a larger one stops short because the free ports left are scattered
    between long runs of taken ones that the bounded search misses (measured: 998 of 1,000,
    9,810 of 10,000). Seeded simulations (simulate_fill): typical is the median, low the
    minimum less the median's distance to it."""
    pool = pool_size(params)
    if pool <= MAX_ATTEMPTS:
        return pool, pool
    trials = trials or max(5, min(30, 400_000 // pool))
    nat_lo = port_range(params)[0]
    own = None if params.nat_random != "none" else (params.port_lo, params.port_hi)
    rng = random.Random(f"{pool}-{processes}-{own}-{params.connect_timeout}")
    fills = sorted(simulate_fill(pool, processes, syns_per_connect(params.connect_timeout), own,
                                 nat_lo, rng) for _ in range(trials))
    typical = fills[len(fills) // 2]
    return max(0, fills[0] - (typical - fills[0])), typical


# --- which NAT address: jhash2 as include/linux/jhash.h, find_best_ips_proto's use of it
_M = 0xFFFFFFFF


def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def jhash2(words: Sequence[int], initval: int) -> int:
    """The kernel's jhash2 over 32-bit words."""
    a = b = c = (0xDEADBEEF + (len(words) << 2) + initval) & _M
    k, n = list(words), len(words)
    while n > 3:
        a, b, c = (a + k[0]) & _M, (b + k[1]) & _M, (c + k[2]) & _M
        a = (a - c) & _M; a ^= _rol(c, 4); c = (c + b) & _M
        b = (b - a) & _M; b ^= _rol(a, 6); a = (a + c) & _M
        c = (c - b) & _M; c ^= _rol(b, 8); b = (b + a) & _M
        a = (a - c) & _M; a ^= _rol(c, 16); c = (c + b) & _M
        b = (b - a) & _M; b ^= _rol(a, 19); a = (a + c) & _M
        c = (c - b) & _M; c ^= _rol(b, 4); b = (b + a) & _M
        k, n = k[3:], n - 3
    if n == 0:
        return c
    if n == 3:
        c = (c + k[2]) & _M
    if n >= 2:
        b = (b + k[1]) & _M
    a = (a + k[0]) & _M
    c ^= b; c = (c - _rol(b, 14)) & _M
    a ^= c; a = (a - _rol(c, 11)) & _M
    b ^= a; b = (b - _rol(a, 25)) & _M
    c ^= b; c = (c - _rol(b, 16)) & _M
    a ^= c; a = (a - _rol(c, 4)) & _M
    b ^= a; b = (b - _rol(a, 14)) & _M
    c ^= b; c = (c - _rol(b, 24)) & _M
    return c


def _word(addr: str) -> int:
    """An IPv4 address as the kernel reads its __be32 into a u32 (little-endian host)."""
    return int.from_bytes(socket.inet_aton(addr), "little")


def nat_address(client: str, destination: str, nat_addrs: Sequence[str]) -> str:
    """The NAT address (of a contiguous range, lowest first) that every connection from
    ``client`` to ``destination`` leaves from (find_best_ips_proto, IPv4, zone 0)."""
    if len(nat_addrs) == 1:
        return nat_addrs[0]
    lo = int(ipaddress.ip_address(min(nat_addrs, key=lambda a: int(ipaddress.ip_address(a)))))
    j = jhash2([_word(client), 0, 0, 0], _word(destination))
    return str(ipaddress.ip_address(lo + ((j * len(nat_addrs)) >> 32)))


@dataclass(frozen=True)
class NatPrediction:
    """What clients behind the NAT hold: ``total`` when every full pool fills to its last port,
    ``typical`` and ``low`` with each full pool short as its bounded search leaves it."""

    total: int
    low: int
    per_client: list[int]
    errnos: list[str | None]         # per client: ETIMEDOUT where the NAT stops it
    limit: str                       # "nat", or the clients' own limit when the NAT never fills
    pool: int                        # ports per NAT address and destination
    port_range: str
    nat_addrs: list[str]
    groups: list[dict] = field(default_factory=list)  # per (NAT address, destination)
    direct_total: int = 0            # what the clients would hold without the NAT
    shortfall: int = 0               # per full pool, at most (the bounded search)
    typical: int = 0                 # total less each full pool's typical shortfall

    def to_dict(self) -> dict:
        return asdict(self)


def client_pairs(params: RunParams, sources: str | Sequence[str],
                 server_addrs: Sequence[str],
                 server_ports: Sequence[int]) -> list[tuple[str, str, int]]:
    """(source address, destination address, port) a client's connections walk, in the
    agent's order (fourtuple.pairs); plain connect() leaves from its first address."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    used = sources[:fourtuple.sources_used(params.bind_mode, len(sources))]
    return [(s, a, p) for s in used for a in server_addrs for p in server_ports]


def predict(params: RunParams, own: Sequence[int], own_errno: str | None,
            client_addrs: Sequence[str | Sequence[str]], server_addrs: Sequence[str],
            nat_addrs: Sequence[str], server_ports: Sequence[int]) -> NatPrediction:
    """The clients' count behind the NAT. ``own``: each client's bound on the direct path
    (model.client_terms with its held ports); ``own_errno``: the errno that bound gives;
    ``client_addrs``: each client's address, or its addresses (the first its own, then its
    extra sources). Every client process spreads round-robin over its (source, destination)
    pairs and stops at its first error: clients are filled one connection at a time each, in
    turn (equal speeds), a client stopping when its own bound is reached or the NAT pool of
    its next pair is full. Each pair's pool is the one of its source's NAT address (the hash)
    and its destination.
    """
    pool = pool_size(params)
    pairs = [client_pairs(params, client_addrs[i], server_addrs, server_ports)
             for i in range(len(own))]
    group_of = {(i, k): (nat_address(s, a, nat_addrs), a, p)
                for i in range(len(own)) for k, (s, a, p) in enumerate(pairs[i])}
    used: dict[tuple, int] = {g: 0 for g in group_of.values()}
    held = [0] * len(own)
    errnos: list[str | None] = [None] * len(own)
    active = [i for i in range(len(own)) if own[i] > 0]
    for i in range(len(own)):
        if own[i] <= 0:
            errnos[i] = own_errno
    step = 0
    while active:
        still = []
        for i in active:
            group = group_of[(i, held[i] % len(pairs[i]))]
            if used[group] >= pool:
                errnos[i] = NAT_ERRNO
                continue
            used[group] += 1
            held[i] += 1
            if held[i] >= own[i]:
                errnos[i] = own_errno
            else:
                still.append(i)
        active = still
        step += 1
    total = sum(held)
    full = [g for g, n in used.items() if n >= pool]
    # a full pool stops short by what its bounded search leaves (the same for each pool)
    per_group = max((len({i for (i, _), gg in group_of.items() if gg == g}) for g in full),
                    default=1)
    low_fill, typical = fill_span(params, per_group * params.procs) if full else (pool, pool)
    short = pool - low_fill
    groups = [{"nat_addr": g[0], "server_addr": g[1], "server_port": g[2],
               "clients": sorted({i + 1 for (i, _), gg in group_of.items() if gg == g}),
               "held": n, "full": n >= pool} for g, n in sorted(used.items())]
    lo, hi = port_range(params)
    return NatPrediction(
        total=total, low=max(0, total - short * len(full)), per_client=held, errnos=errnos,
        typical=total - (pool - typical) * len(full),
        limit=NAT if NAT_ERRNO in errnos else "own", pool=pool, port_range=f"{lo}-{hi}",
        nat_addrs=list(nat_addrs), groups=groups, direct_total=sum(own), shortfall=short)


def addresses_needed(connections: int, clients: int, pool: int, destinations: int = 1,
                     sources: int = 1) -> int:
    """NAT addresses that let ``clients`` hold ``connections`` to ``destinations`` together,
    when the hash spreads them evenly: each address serves a pool per destination, and no
    source address (``sources`` per client, used) ever uses more than one NAT address per
    destination address, so more addresses than sources add nothing."""
    per_address = pool * destinations
    need = math.ceil(connections / per_address) if connections > 0 else 0
    return need if need <= clients * sources else -1  # -1: no number of addresses is enough

