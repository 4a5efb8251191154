"""Predict what one experiment should hold, and what should stop it (pure, no I/O).

The model of ``shared/docs/limits.md``: each client container is bounded by its port pool
(the range minus ports already held in its namespace), by its processes' descriptors
(procs x (nofile - baseline)), and by an optional per-process bound; the server by its
workers' descriptors plus the accept queue; everything by conntrack room. The smallest term
wins and names the errno the client should see.

It is also the one place that turns a run's facts into explanations (``compare_run``: the
report and `tcplimits run`'s summary both call it). Longer than ~400 lines for that reason:
each sentence sits beside the formula it quotes, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tcplimits.model import fourtuple, hostlimits
from tcplimits.config.params import FIELDS, RunParams
from tcplimits.results import STATUS_OK

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
    return (f"the server dropped {listen_drops:,} SYN{'' if listen_drops == 1 else 's'} at its "
            "listener (accept queue full, TcpExt ListenDrops): those connect() calls waited "
            "for a retransmit, 1 s or more (a larger --backlog, up to net.core.somaxconn, or "
            "more --server-workers make drops rarer)")


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


# --- Observed against predicted -------------------------------------------------------------
# A measurement "agrees" with the model when it is within max(TOLERANCE_ABS, TOLERANCE_REL x
# prediction) connections; every nonzero difference still gets an explanation.
TOLERANCE_ABS = 2
TOLERANCE_REL = 0.005

# Linux resends an unanswered SYN after 1 s (TCP_TIMEOUT_INIT), then doubles the wait.
SYN_RETRANSMIT_S = 1.0

# Why a client process may stop with an errno the model did not name.
ERRNO_CAUSES = {
    "EADDRNOTAVAIL": "the namespace's port pool ran out",
    "EADDRINUSE": "bind((addr, 0)) found no free port on its source address (--bind-mode "
                  "bind: one pool for every destination)",
    "EMFILE": "the process reached its own descriptor limit (nofile - {base})",
    "ENFILE": "the host's fs.file-max ran out",
    "ETIMEDOUT": "a SYN went unanswered until the connect timeout (accept queue full at a "
                 "server out of descriptors, or a full conntrack table)",
    "ECONNREFUSED": "nothing listened on the server port",
    "MAX_CONNECTIONS": "it reached --max-connections",
}


@dataclass(frozen=True)
class Comparison:
    """One run's measurement set against the model, with the causes found for any gap."""

    run_id: str
    observed: int                  # connections the clients held together
    predicted: int                 # the run's own prediction (parameters + ports held at start)
    expected: int                  # the model again, with the ports measured as held at start
    limit: str                     # the model's limiting factor
    expected_errno: str | None
    errnos: dict[str, int]         # errno name (or stop reason) -> client processes stopping so
    server_accepted: int | None
    explanations: list[str]

    @property
    def deviation(self) -> int:
        return self.observed - self.predicted

    @property
    def tolerance(self) -> int:
        return tolerance(self.predicted)

    @property
    def within_tolerance(self) -> bool:
        return abs(self.deviation) <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "deviation": self.deviation, "tolerance": self.tolerance,
                "within_tolerance": self.within_tolerance}


def tolerance(predicted: int) -> int:
    """Connections a measurement may differ from ``predicted`` and still agree."""
    return max(TOLERANCE_ABS, round(TOLERANCE_REL * predicted))


def params_of(run: Mapping[str, Any]) -> RunParams:
    """The RunParams of a dataset row (one column per field; nulls mean the default)."""
    return RunParams.from_mapping({k: run[k] for k in FIELDS if run.get(k) is not None})


def held_counts(value: Any, clients: int) -> list[int]:
    """Ports held per client container, from a list of counts or of lists of ports."""
    if value is None:
        return [0] * clients
    counts = [len(v) if isinstance(v, (list, tuple)) else int(v or 0) for v in value]
    return (counts + [0] * clients)[:clients]


# Who holds a socket found in a client's namespace before its first connect(), by the owner
# name the engine records (run.json facts.held_sockets[client][i].owner).
SOCKET_OWNERS = {
    "docker-dns": "Docker's embedded DNS resolver (it listens on 127.0.0.11 in every container "
                  "on a user-defined network)",
}


def held_sockets_of(value: Any) -> dict[int, list[dict]]:
    """Client number -> the sockets held in its namespace at start, from run.json's
    facts.held_sockets or the dataset's held_sockets column (JSON text); {} when unknown."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for key, sockets in value.items():
        if str(key).isdigit() and isinstance(sockets, list):
            out[int(key)] = [s for s in sockets if isinstance(s, Mapping)]
    return out


def _holder(sockets: Sequence[Mapping[str, Any]]) -> str:
    """Who held these sockets, in words."""
    owners = sorted({SOCKET_OWNERS.get(s.get("owner"), f"a socket on {s.get('addr')}")
                     for s in sockets})
    return " and ".join(owners)


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
    if limit == SERVER:
        return (f"the server accepts {accepted:,} and queues "
                f"{(p.get('server_capacity') or 0) - accepted:,} more "
                "(min(backlog, somaxconn) + 1) before clients' SYNs go unanswered")
    return "the host's conntrack table is full: further SYNs are dropped"


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"


def compare_run(
    run: Mapping[str, Any],
    clients: Sequence[Mapping[str, Any]] = (),
    server: Sequence[Mapping[str, Any]] = (),
) -> Comparison | None:
    """Set a finished run (a dataset row) against the model and explain every gap: the one
    place that turns a run's facts into sentences (the report and `tcplimits run` both call it).

    ``clients`` are the run's client-process rows (client, proc, connections, error,
    held_ports); ``server`` its worker rows (worker, accepted, error), when at hand. The row's
    ``somaxconn`` and ``held_sockets`` are the facts the engine measured (absent in old runs:
    then the kernel default, and the held ports by count only). Returns None for a run that
    did not finish ("failed", "unsupported")."""
    if run.get("status") != STATUS_OK or run.get("connections_total") is None:
        return None
    if run.get("mode") == "churn":  # opened and closed, not held: churn_model judges it
        return None
    params = params_of(run)
    held = held_counts(run.get("held_ports"), params.clients)
    if params.bind_mode == fourtuple.BIND:  # only the client rows say which ports bind() may take
        held = [0] * params.clients
    for row in clients:  # every process of a container sees the same namespace
        if row.get("held_ports") is not None and 1 <= (row.get("client") or 0) <= len(held):
            cost = fourtuple.held_from_counts(params.bind_mode, int(row["held_ports"]),
                                              int(row.get("held_other_addr") or 0))
            held[row["client"] - 1] = max(held[row["client"] - 1], cost)
    server_nofile = run.get("resolved_server_nofile") or params.server_nofile
    workers = run.get("resolved_server_workers")
    if workers is None and params.server_workers != "auto":
        workers = params.server_workers
    observed = int(run["connections_total"])
    accepted = run.get("server_accepted")
    somaxconn = int(run.get("somaxconn") or SOMAXCONN)
    queue = accept_queue(params.backlog, somaxconn)

    if server_nofile is None or workers is None:  # cannot recompute: trust the run's record
        predicted = int(run.get("predicted_total") or 0)
        limit = run.get("predicted_limit") or PORTS
        return Comparison(str(run["run_id"]), observed, predicted, predicted, limit,
                          errno_of(limit, params) if limit in ERRNO_OF_LIMIT else None,
                          _errnos(clients), accepted, [])
    conntrack = run.get("env_nf_conntrack_max")
    if run.get("host_limit") == hostlimits.CONNTRACK_MAX and run.get("host_limit_stops_at"):
        # the host's table had less room than its size: what else the host tracked
        conntrack = min(conntrack or run["host_limit_stops_at"], run["host_limit_stops_at"])
    kw = dict(server_nofile=int(server_nofile), server_workers=int(workers),
              conntrack_max=conntrack, somaxconn=somaxconn)
    naive = predict(params, **kw)
    pred = predict(params, held_ports=held, **kw)
    predicted = run.get("predicted_total")
    predicted = pred.total if predicted is None else int(predicted)
    errnos = _errnos(clients)
    fd_room = params.nofile - CLIENT_BASELINE_FDS
    why: list[str] = []

    # Ports held in the namespace before the first connect() shrink that client's pool.
    if pred.limit == PORTS:
        why += _held_port_reasons(params, held, held_sockets_of(run.get("held_sockets")))
        if predicted == naive.total != pred.total:
            why.append(f"the prediction made before the run did not count held ports; "
                       f"counting them gives {pred.total:,}")

    # A server out of descriptors: clients count what it accepted plus the accept queue.
    if pred.limit == SERVER and accepted is not None:
        extra = observed - int(accepted)
        why.append(f"the server accepted {int(accepted):,} ({workers} worker(s) x "
                   f"({server_nofile:,} - {server_baseline_fds(params)}) descriptors = "
                   f"{pred.server_accepted:,} expected); clients hold {extra:,} more, "
                   f"the accept queue holds backlog + 1 = {queue:,}"
                   + (f" (backlog capped at somaxconn {somaxconn:,})"
                      if params.backlog > somaxconn else ""))
        if extra > queue:
            why.append(f"{extra - queue:,} handshake(s) completed on the client side while the "
                       "accept queue was full: the server drops the final ACK, but the "
                       "client already counts the connection")
        elif extra < queue:
            why.append(f"{queue - extra:,} place(s) of the accept queue stayed empty when the "
                       "clients gave up")
    elif accepted is not None and int(accepted) != observed:
        gap = observed - int(accepted)
        where = (f"the kernel completes the handshake before accept(), so up to {queue:,} "
                 f"(min(backlog, somaxconn) + 1) wait in the accept queue"
                 if 0 < gap <= queue else "not accounted for")
        why.append(f"the server had accepted {int(accepted):,}, {gap:+,} against the "
                   f"clients' count: {where}")

    # Server workers whose accept() failed: did that limit the run?
    failing = [r for r in server if r.get("error")]
    if failing:
        errors = ", ".join(sorted({str(r["error"]) for r in failing}))
        who = ", ".join(str(r.get("worker")) for r in failing)
        if accepted is not None and int(accepted) >= observed:
            why.append(f"server worker(s) {who} hit {errors} in accept() at their descriptor "
                       "limit; the other workers accepted the rest, so the server did not "
                       "limit the run")
        else:
            why.append(f"the server's accept() failed with {errors} in worker(s) {who} once "
                       "out of descriptors; the server kept running, clients saw their SYNs "
                       "dropped once the accept queue was full")

    # Client processes that stopped for another reason than the model's.
    expected_errno = pred.errno or "MAX_CONNECTIONS"
    for name, count in errnos.items():
        if name != expected_errno:
            cause = ERRNO_CAUSES.get(name, "see the run's logs").format(base=CLIENT_BASELINE_FDS)
            if name == "EMFILE":
                cause += f", {fd_room:,} sockets"
            why.append(f"{_n(count, 'client process')} stopped with {name}: {cause}")
            if name == "ETIMEDOUT" and params.connect_timeout < SYN_RETRANSMIT_S:
                why.append(f"the connect timeout ({params.connect_timeout:g} s) is shorter than "
                           f"the first SYN retransmission ({SYN_RETRANSMIT_S:g} s): a single "
                           "lost or late SYN ends the client")
    if params.procs > 1 and pred.limit == PORTS and "EMFILE" in errnos:
        racing = sorted({(int(r["client"]), int(r["proc"])) for r in clients
                         if r.get("error") == "EMFILE"})
        named = ", ".join(f"{c}.{p}" for c, p in racing)
        why.append("processes share the container's port pool and race for it: process(es) "
                   f"{named} (client.process) reached their descriptor limit ({fd_room:,}) "
                   "while the others took the remaining ports, which bound the container")

    # Per container (with one container the total says it all), where the model can say which
    # client gets what.
    if pred.limit in (PORTS, DESCRIPTORS, MAX_CONNECTIONS) and clients and params.clients > 1:
        per_client: dict[int, int] = {}
        for row in clients:
            per_client[row["client"]] = per_client.get(row["client"], 0) + int(
                row.get("connections") or 0)
        for i, want in enumerate(pred.per_client, 1):
            got = per_client.get(i)
            if got is not None and got != want:
                why.append(f"client {i} held {got:,}, {got - want:+,} against {want:,}")

    # A host setting that stops the point: which, its value, the need, the command.
    why += [lim.sentence() for lim in hostlimits.from_record(run.get("host_limits"))
            if lim.binds and lim.effect == "stops"]

    residual = observed - pred.total
    if residual and pred.limit != SERVER:
        unexplained = not errnos.keys() - {expected_errno}
        why.append(f"{residual:+,} connection(s) against the model with held ports counted"
                   + (", not explained by the data" if unexplained else ""))
    return Comparison(str(run["run_id"]), observed, predicted, pred.total, pred.limit,
                      pred.errno, errnos, accepted, why)


def _held_port_reasons(params: RunParams, held: list[int],
                       sockets: dict[int, list[dict]]) -> list[str]:
    """Why clients' pools were smaller than the range: one sentence per (count, holder)."""
    groups: dict[tuple[int, str], list[int]] = {}
    for i, h in enumerate(held, 1):
        if h and client_terms(params, h)[0] < client_terms(params, 0)[0]:
            holder = (_holder(sockets[i]) if sockets.get(i)
                      else "something in its namespace (e.g. Docker's DNS listener "
                            "on 127.0.0.11)")
            groups.setdefault((h, holder), []).append(i)
    out = []
    for (h, holder), who in groups.items():
        ports = ", ".join(f"{s.get('port')} ({s.get('state')})"
                          for i in who for s in sockets.get(i, []))
        out.append(f"{'clients' if len(who) > 1 else 'client'} {', '.join(map(str, who))}: "
                   f"{_n(h, 'port')}{' each' if len(who) > 1 else ''} of the range already "
                   f"held at start by {holder}"
                   + (f" [{ports}]" if ports else "")
                   + f", so the pool had {params.port_count - h:,} ports, not "
                   f"{params.port_count:,}: connect() never takes a port held by bind()")
    return out


def _errnos(clients: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in clients:
        name = row.get("error") or "none"
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def compare_runs(
    runs: Iterable[Mapping[str, Any]],
    clients: Iterable[Mapping[str, Any]] = (),
    server: Iterable[Mapping[str, Any]] = (),
) -> list[Comparison]:
    """compare_run for every finished run; client and server rows are matched on run_id."""
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for row in clients:
        by_run.setdefault(row["run_id"], []).append(row)
    workers: dict[str, list[Mapping[str, Any]]] = {}
    for row in server:
        workers.setdefault(row["run_id"], []).append(row)
    found = (compare_run(run, by_run.get(run["run_id"], []), workers.get(run["run_id"], []))
             for run in runs)
    return [c for c in found if c is not None]
