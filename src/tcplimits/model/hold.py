"""Predict what one experiment should hold, and what should stop it (pure, no I/O).

The model of ``shared/docs/limits.md``: each client container is bounded by its port pool
(the range minus ports already held in its namespace), by its processes' descriptors
(procs x (nofile - baseline)), and by an optional per-process bound; the server by its
workers' descriptors plus the accept queue; everything by conntrack room. The smallest term
wins and names the errno the client should see.

``limit_reason`` words the prediction beside the formulas it quotes; a run set against the
prediction, every difference explained, is ``tcplimits.model.compare``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tcplimits.config.params import RunParams
from tcplimits.model import fourtuple, hostlimits
from tcplimits.model.words import plural

# Descriptors a fresh Python process holds before its first socket: stdin, stdout, stderr.
CLIENT_BASELINE_FDS = 3
# A server worker holds those three plus the listening socket (one per server port).
SERVER_BASELINE_FDS = 4


def server_baseline_fds(params: RunParams) -> int:
    """Descriptors a server worker holds before its first accept(): stdio + its listeners."""
    return SERVER_BASELINE_FDS - 1 + params.server_ports
# Linux caps listen()'s backlog at net.core.somaxconn (4096 since 5.4) and the accept
# queue holds backlog + 1 completed connections.
SOMAXCONN = 4096

PORTS = "ports"
DESCRIPTORS = "descriptors"
MAX_CONNECTIONS = "max_connections"
SERVER = "server"
CONNTRACK = "conntrack"

ERRNO_OF_LIMIT = {
    PORTS: "EADDRNOTAVAIL",
    DESCRIPTORS: "EMFILE",
    MAX_CONNECTIONS: None,  # the client stops by itself
    SERVER: "ETIMEDOUT",
    CONNTRACK: "ETIMEDOUT",
}


@dataclass(frozen=True)
class Prediction:
    per_client: list[int]          # connections each client container should hold
    total: int                     # connections all clients should hold together
    limit: str                     # the term that wins: ports, descriptors, max_connections, server, conntrack
    errno: str | None              # the errno name the clients should stop with
    client_capacity: int           # what one client could reach with an unbounded server
    server_capacity: int           # server accept capacity + accept queue
    server_accepted: int           # what the server should have accepted
    terms: dict[str, int] = field(default_factory=dict)  # each client-side term, per container

    def to_dict(self) -> dict:
        return asdict(self)


def errno_of(limit: str, params: RunParams) -> str | None:
    """The errno a client should stop with when ``limit`` wins (bind() says EADDRINUSE)."""
    if limit == PORTS:
        return fourtuple.POOL_ERRNO[params.bind_mode]
    return ERRNO_OF_LIMIT[limit]


def accept_queue(backlog: int, somaxconn: int = SOMAXCONN) -> int:
    """Completed connections the kernel queues before accept(): min(backlog, somaxconn) + 1."""
    return min(backlog, somaxconn) + 1


def dropped_syns_reason(listen_drops: int | None, limit: str) -> str | None:
    """Why a run's times are suspect when its server dropped SYNs (TcpExt ListenDrops), or
    None. Where the server is the predicted limit, drops are what is measured; elsewhere each
    one made a connect() wait for a SYN retransmit (1 s, then 2, 4, ...): the counts stand,
    the times carry that wait."""
    if not listen_drops or limit == SERVER:
        return None
    return (f"the server dropped {plural(listen_drops, 'SYN')} at its "
            "listener (accept queue full, TcpExt ListenDrops): those connect() calls waited "
            "for a retransmit, 1 s or more (a larger --backlog, up to net.core.somaxconn, "
            "makes drops rarer)")


def auto_server_workers(params: RunParams, server_nofile: int) -> int:
    """Enough workers that the server accepts every connection the clients can make."""
    demand = params.clients * client_terms(params)[0]
    per_worker = max(1, server_nofile - server_baseline_fds(params))
    # Connections spread unevenly over workers sharing one socket: keep a spare worker.
    return math.ceil(demand * 1.1 / per_worker) + 1


# network loopback: every client connects to its own 127.0.0.0/8 destination addresses, and
# each (source, destination, port) has its own port pool. connect() costs a few probes of the
# port hash while a pool is little used and a scan of the used part once it fills up, so the
# destinations are as many as keep each pool at most this full.
LOOPBACK_POOL_FILL = 0.25
LOOPBACK_MAX_DESTINATIONS = 255 * 255


def destinations(params: RunParams) -> int:
    """Server addresses each client container spreads over: 1 on a bridge (the server has one
    address); on loopback, enough that no pool is filled past LOOPBACK_POOL_FILL, except in
    mode churn, whose pool is the point's question: one 127.x address of its own."""
    if params.network != "loopback" or params.churn:
        return 1
    demand = params.procs * max(0, params.nofile - CLIENT_BASELINE_FDS)
    if params.max_connections is not None:
        demand = min(demand, params.procs * params.max_connections)
    pool = max(1, params.port_count - 1)  # the server's listening port may sit in the range
    return max(1, min(LOOPBACK_MAX_DESTINATIONS,
                      math.ceil(demand / (LOOPBACK_POOL_FILL * pool))))


def loopback_destinations(client: int, count: int) -> list[str]:
    """Client ``client``'s destination addresses on loopback: 127.<client>.<hi>.<lo>, none of
    them 127.0.0.1 (the server and every client share the namespace, so each client gets
    addresses of its own and its pools are its own)."""
    return [f"127.{client}.{k // 255}.{k % 255 + 1}" for k in range(count)]


def client_terms(params: RunParams, held_ports: int | list[dict] = 0) -> tuple[int, dict[str, int]]:
    """(bound, terms) for one client container with an unbounded server. ``held_ports``: a
    count, or the sockets held in the range ({"addr", "port"}: what they cost depends on the
    bind mode, see fourtuple). On loopback each of the client's own 127.x destinations counts
    as a server address (destinations)."""
    terms = {
        PORTS: fourtuple.port_capacity(
            params.port_count, params.bind_mode,
            server_addrs=params.server_addrs * destinations(params),
            server_ports=params.server_ports, client_addrs=params.client_addrs,
            held=held_ports),
        DESCRIPTORS: params.procs * max(0, params.nofile - CLIENT_BASELINE_FDS),
    }
    if params.max_connections is not None:
        terms[MAX_CONNECTIONS] = params.procs * params.max_connections
    return min(terms.values()), terms


def predict(
    params: RunParams,
    *,
    server_nofile: int,
    server_workers: int,
    held_ports: list[int | list[dict]] | None = None,
    conntrack_max: int | None = None,
    somaxconn: int = SOMAXCONN,
    host_facts: Mapping[str, Any] | None = None,
) -> Prediction:
    """What the run should hold. ``held_ports[i]``: ports in the range already held in client
    i's namespace (Docker's embedded DNS listener, for one). ``server_nofile`` and
    ``server_workers`` are the resolved values (no "auto"). ``host_facts``
    (footprint.host_facts) adds the host-wide limits of tcplimits.model.hostlimits: the host
    namespace's conntrack table with what it already holds."""
    held = list(held_ports or [0] * params.clients)
    if len(held) != params.clients:
        raise ValueError(f"held_ports has {len(held)} entries for {params.clients} clients")
    per_client, client_limits, all_terms = [], [], {}
    for h in held:
        bound, terms = client_terms(params, h)
        per_client.append(bound)
        # Ties go to the term listed first: ports, then descriptors, then the explicit bound.
        client_limits.append(next(k for k, v in terms.items() if v == bound))
        all_terms = terms
    capacity = per_client[0] if per_client else 0
    server_accept = server_workers * max(0, server_nofile - server_baseline_fds(params))
    # Each listening port has its own accept queue.
    server_capacity = server_accept + params.server_ports * accept_queue(params.backlog, somaxconn)
    demand = sum(per_client)

    limit = client_limits[0] if client_limits else PORTS
    total = demand
    if demand > server_capacity:
        limit, total = SERVER, server_capacity
        # Which client wins the race for the server is not predictable; spread evenly.
        share, rest = divmod(server_capacity, params.clients)
        per_client = [min(c, share + (1 if i < rest else 0)) for i, c in enumerate(per_client)]
    # Conntrack is counted per namespace: the server's holds every connection on a bridge
    # (Docker's DNS rules), the host's too when bridged traffic passes its netfilter.
    room = conntrack_max if params.network == "bridge" else None
    if host_facts is not None:
        stop = hostlimits.binding(hostlimits.host_limits(params, host_facts, total,
                                                         server_workers))
        if stop is not None and stop.setting == hostlimits.CONNTRACK_MAX:
            room = stop.stops_at if room is None else min(room, stop.stops_at)
    if room is not None and total > room:
        limit, total = CONNTRACK, room
        share, rest = divmod(room, params.clients)
        per_client = [min(c, share + (1 if i < rest else 0)) for i, c in enumerate(per_client)]
    return Prediction(
        per_client=per_client,
        total=total,
        limit=limit,
        errno=errno_of(limit, params),
        client_capacity=capacity,
        server_capacity=server_capacity,
        server_accepted=min(total, server_accept),
        terms=all_terms,
    )


def limit_reason(params: RunParams, prediction: Prediction | Mapping[str, Any]) -> str:
    """One sentence: why the model's limit gives the number it does (``prediction`` may be
    run.json's dict of it)."""
    p = prediction if isinstance(prediction, Mapping) else prediction.to_dict()
    limit, accepted = p.get("limit"), p.get("server_accepted") or 0
    fd_room = params.nofile - CLIENT_BASELINE_FDS
    if limit == PORTS:
        return (f"each client's port pool: the {params.port_count:,} ports of "
                f"{params.port_range} minus those already held in its namespace"
                + fourtuple.pools_phrase(params.bind_mode, params.server_addrs,
                                         params.server_ports, params.client_addrs))
    if limit == DESCRIPTORS:
        return (f"each client process holds nofile - {CLIENT_BASELINE_FDS} = {fd_room:,} "
                "sockets: descriptors 0-2 (stdin, stdout, stderr) are already open")
    if limit == MAX_CONNECTIONS:
        return f"each client process stops by itself at {params.max_connections:,} connections"
    if limit == "nat":  # behind a NAT (tcplimits.model.natrun)
        from tcplimits.model import natrun
        return natrun.limit_sentence(p.get("nat") or {})
    if limit == SERVER:
        return (f"the server accepts {accepted:,} and queues "
                f"{(p.get('server_capacity') or 0) - accepted:,} more "
                "(min(backlog, somaxconn) + 1) before clients' SYNs go unanswered")
    return "the host's conntrack table is full: further SYNs are dropped"

