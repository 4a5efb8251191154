"""A finished run set against the hold model, every difference explained (pure, no I/O).

The one place that turns a run's facts into sentences: the report and `tcplimits run`'s
summary both call ``compare_run``. Each explanation clause is one ``_why_*`` step, in the
order the sentences appear; each sentence quotes the formula of ``hold`` it explains.
Callers pass finished runs only (status ok): the model knows no run statuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tcplimits.config.params import FIELDS, RunParams
from tcplimits.model import fourtuple, hostlimits
from tcplimits.model.hold import (
    CLIENT_BASELINE_FDS, DESCRIPTORS, ERRNO_OF_LIMIT, MAX_CONNECTIONS, PORTS, SERVER, SOMAXCONN,
    Prediction, accept_queue, client_terms, errno_of, predict, server_baseline_fds)
from tcplimits.model.words import plural

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

# Who holds a socket found in a client's namespace before its first connect(), by the owner
# name the engine records (run.json facts.held_sockets[client][i].owner).
SOCKET_OWNERS = {
    "docker-dns": "Docker's embedded DNS resolver (it listens on 127.0.0.11 in every container "
                  "on a user-defined network)",
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


@dataclass(frozen=True)
class _Facts:
    """What the explanation steps read: the run's measurements and the model's numbers."""

    run: Mapping[str, Any]
    clients: Sequence[Mapping[str, Any]]
    server: Sequence[Mapping[str, Any]]
    params: RunParams
    held: list[int]            # ports held per client, as they cost that client's pool
    naive: Prediction          # the model without held ports
    pred: Prediction           # the model with them
    predicted: int             # the run's own prediction
    observed: int
    accepted: int | None
    server_nofile: int
    workers: int
    somaxconn: int
    errnos: dict[str, int]

    @property
    def queue(self) -> int:
        return accept_queue(self.params.backlog, self.somaxconn)

    @property
    def fd_room(self) -> int:
        return self.params.nofile - CLIENT_BASELINE_FDS

    @property
    def expected_errno(self) -> str:
        return self.pred.errno or "MAX_CONNECTIONS"


def compare_run(
    run: Mapping[str, Any],
    clients: Sequence[Mapping[str, Any]] = (),
    server: Sequence[Mapping[str, Any]] = (),
) -> Comparison | None:
    """Set a finished run (a dataset row, status ok) against the model and explain every gap.

    ``clients`` are the run's client-process rows (client, proc, connections, error,
    held_ports); ``server`` its worker rows (worker, accepted, error), when at hand. The row's
    ``somaxconn`` and ``held_sockets`` are the facts the engine measured (absent in old runs:
    then the kernel default, and the held ports by count only). Returns None for a run without
    a count (the dataset's unfinished runs) and for mode churn (churn_model judges it)."""
    if run.get("connections_total") is None or run.get("mode") == "churn":
        return None
    if run.get("nat") == "gateway":  # behind a NAT: tcplimits.model.natrun judges it
        from tcplimits.model import natrun
        return natrun.comparison(run, clients)
    if run.get("server") not in (None, "agent"):  # a real server: model/servers.py judges it
        return None
    params = params_of(run)
    server_nofile = run.get("resolved_server_nofile") or params.server_nofile
    workers = run.get("resolved_server_workers")
    if workers is None and params.server_workers != "auto":
        workers = params.server_workers
    if server_nofile is None or workers is None:
        return _trusting_the_record(run, params, clients)
    facts = _facts(run, clients, server, params, int(server_nofile), int(workers))
    why = [sentence for step in _WHY for sentence in step(facts)]
    return Comparison(str(run["run_id"]), facts.observed, facts.predicted, facts.pred.total,
                      facts.pred.limit, facts.pred.errno, facts.errnos, facts.accepted, why)


def _trusting_the_record(run: Mapping[str, Any], params: RunParams,
                         clients: Sequence[Mapping[str, Any]]) -> Comparison:
    """Without the resolved server the model cannot be recomputed: the run's record stands."""
    predicted = int(run.get("predicted_total") or 0)
    limit = run.get("predicted_limit") or PORTS
    return Comparison(str(run["run_id"]), int(run["connections_total"]), predicted, predicted,
                      limit, errno_of(limit, params) if limit in ERRNO_OF_LIMIT else None,
                      _errnos(clients), run.get("server_accepted"), [])


def _facts(run: Mapping[str, Any], clients: Sequence[Mapping[str, Any]],
           server: Sequence[Mapping[str, Any]], params: RunParams, server_nofile: int,
           workers: int) -> _Facts:
    """The model recomputed for the run: without held ports and with those measured."""
    held = _held_ports(run, clients, params)
    somaxconn = int(run.get("somaxconn") or SOMAXCONN)
    conntrack = run.get("env_nf_conntrack_max")
    if run.get("host_limit") == hostlimits.CONNTRACK_MAX and run.get("host_limit_stops_at"):
        # the host's table had less room than its size: what else the host tracked
        conntrack = min(conntrack or run["host_limit_stops_at"], run["host_limit_stops_at"])
    kw = dict(server_nofile=server_nofile, server_workers=workers,
              conntrack_max=conntrack, somaxconn=somaxconn)
    pred = predict(params, held_ports=held, **kw)
    predicted = run.get("predicted_total")
    return _Facts(run, clients, server, params, held, predict(params, **kw), pred,
                  pred.total if predicted is None else int(predicted),
                  int(run["connections_total"]), run.get("server_accepted"), server_nofile,
                  workers, somaxconn, _errnos(clients))


def _held_ports(run: Mapping[str, Any], clients: Sequence[Mapping[str, Any]],
                params: RunParams) -> list[int]:
    """Ports held per client at start, as they cost its pool (the client rows know best)."""
    held = held_counts(run.get("held_ports"), params.clients)
    if params.bind_mode == fourtuple.BIND:  # only the client rows say which ports bind() may take
        held = [0] * params.clients
    for row in clients:  # every process of a container sees the same namespace
        if row.get("held_ports") is not None and 1 <= (row.get("client") or 0) <= len(held):
            cost = fourtuple.held_from_counts(params.bind_mode, int(row["held_ports"]),
                                              int(row.get("held_other_addr") or 0))
            held[row["client"] - 1] = max(held[row["client"] - 1], cost)
    return held


def _why_held_ports(f: _Facts) -> list[str]:
    """Ports held in the namespace before the first connect() shrink that client's pool."""
    if f.pred.limit != PORTS:
        return []
    why = _held_port_reasons(f.params, f.held, held_sockets_of(f.run.get("held_sockets")))
    if f.predicted == f.naive.total != f.pred.total:
        why.append(f"the prediction made before the run did not count held ports; "
                   f"counting them gives {f.pred.total:,}")
    return why


def _why_server_bound(f: _Facts) -> list[str]:
    """A server out of descriptors: clients count what it accepted plus the accept queue."""
    if f.pred.limit != SERVER or f.accepted is None:
        return []
    extra = f.observed - int(f.accepted)
    why = [f"the server accepted {int(f.accepted):,} ({f.workers} worker(s) x "
           f"({f.server_nofile:,} - {server_baseline_fds(f.params)}) descriptors = "
           f"{f.pred.server_accepted:,} expected); clients hold {extra:,} more, "
           f"the accept queue holds backlog + 1 = {f.queue:,}"
           + (f" (backlog capped at somaxconn {f.somaxconn:,})"
              if f.params.backlog > f.somaxconn else "")]
    if extra > f.queue:
        why.append(f"{extra - f.queue:,} handshake(s) completed on the client side while the "
                   "accept queue was full: the server drops the final ACK, but the "
                   "client already counts the connection")
    elif extra < f.queue:
        why.append(f"{f.queue - extra:,} place(s) of the accept queue stayed empty when the "
                   "clients gave up")
    return why


def _why_accepted_differs(f: _Facts) -> list[str]:
    """Elsewhere, the server's count against the clients': the accept queue, or nothing."""
    if f.pred.limit == SERVER or f.accepted is None or int(f.accepted) == f.observed:
        return []
    gap = f.observed - int(f.accepted)
    where = (f"the kernel completes the handshake before accept(), so up to {f.queue:,} "
             f"(min(backlog, somaxconn) + 1) wait in the accept queue"
             if 0 < gap <= f.queue else "not accounted for")
    return [f"the server had accepted {int(f.accepted):,}, {gap:+,} against the "
            f"clients' count: {where}"]


def _why_failing_workers(f: _Facts) -> list[str]:
    """Server workers whose accept() failed: did that limit the run?"""
    failing = [r for r in f.server if r.get("error")]
    if not failing:
        return []
    errors = ", ".join(sorted({str(r["error"]) for r in failing}))
    who = ", ".join(str(r.get("worker")) for r in failing)
    if f.accepted is not None and int(f.accepted) >= f.observed:
        return [f"server worker(s) {who} hit {errors} in accept() at their descriptor "
                "limit; the other workers accepted the rest, so the server did not "
                "limit the run"]
    return [f"the server's accept() failed with {errors} in worker(s) {who} once "
            "out of descriptors; the server kept running, clients saw their SYNs "
            "dropped once the accept queue was full"]


def _why_other_errnos(f: _Facts) -> list[str]:
    """Client processes that stopped for another reason than the model's."""
    why = []
    for name, count in f.errnos.items():
        if name == f.expected_errno:
            continue
        cause = ERRNO_CAUSES.get(name, "see the run's logs").format(base=CLIENT_BASELINE_FDS)
        if name == "EMFILE":
            cause += f", {f.fd_room:,} sockets"
        why.append(f"{plural(count, 'client process')} stopped with {name}: {cause}")
        if name == "ETIMEDOUT" and f.params.connect_timeout < SYN_RETRANSMIT_S:
            why.append(f"the connect timeout ({f.params.connect_timeout:g} s) is shorter than "
                       f"the first SYN retransmission ({SYN_RETRANSMIT_S:g} s): a single "
                       "lost or late SYN ends the client")
    return why


def _why_processes_race(f: _Facts) -> list[str]:
    """Processes of one container share its port pool: some reach nofile first."""
    if not (f.params.procs > 1 and f.pred.limit == PORTS and "EMFILE" in f.errnos):
        return []
    racing = sorted({(int(r["client"]), int(r["proc"])) for r in f.clients
                     if r.get("error") == "EMFILE"})
    named = ", ".join(f"{c}.{p}" for c, p in racing)
    return ["processes share the container's port pool and race for it: process(es) "
            f"{named} (client.process) reached their descriptor limit ({f.fd_room:,}) "
            "while the others took the remaining ports, which bound the container"]


def _why_per_client(f: _Facts) -> list[str]:
    """Per container (with one container the total says it all), where the model can say
    which client gets what."""
    if not (f.pred.limit in (PORTS, DESCRIPTORS, MAX_CONNECTIONS) and f.clients
            and f.params.clients > 1):
        return []
    per_client: dict[int, int] = {}
    for row in f.clients:
        per_client[row["client"]] = per_client.get(row["client"], 0) + int(
            row.get("connections") or 0)
    why = []
    for i, want in enumerate(f.pred.per_client, 1):
        got = per_client.get(i)
        if got is not None and got != want:
            why.append(f"client {i} held {got:,}, {got - want:+,} against {want:,}")
    return why


def _why_host_setting(f: _Facts) -> list[str]:
    """A host setting that stops the point: which, its value, the need, the command."""
    return [lim.sentence() for lim in hostlimits.from_record(f.run.get("host_limits"))
            if lim.binds and lim.effect == "stops"]


def _why_residual(f: _Facts) -> list[str]:
    """What is left against the model with held ports counted, and whether the data says why."""
    residual = f.observed - f.pred.total
    if not residual or f.pred.limit == SERVER:
        return []
    unexplained = not f.errnos.keys() - {f.expected_errno}
    return [f"{residual:+,} connection(s) against the model with held ports counted"
            + (", not explained by the data" if unexplained else "")]


# The explanation clauses, in the order their sentences appear.
_WHY = (_why_held_ports, _why_server_bound, _why_accepted_differs, _why_failing_workers,
        _why_other_errnos, _why_processes_race, _why_per_client, _why_host_setting,
        _why_residual)


def _holder(sockets: Sequence[Mapping[str, Any]]) -> str:
    """Who held these sockets, in words."""
    owners = sorted({SOCKET_OWNERS.get(s.get("owner"), f"a socket on {s.get('addr')}")
                     for s in sockets})
    return " and ".join(owners)


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
                   f"{plural(h, 'port')}{' each' if len(who) > 1 else ''} of the range already "
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
    """compare_run for every run (callers pass finished runs); client and server rows are
    matched on run_id."""
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for row in clients:
        by_run.setdefault(row["run_id"], []).append(row)
    workers: dict[str, list[Mapping[str, Any]]] = {}
    for row in server:
        workers.setdefault(row["run_id"], []).append(row)
    found = (compare_run(run, by_run.get(run["run_id"], []), workers.get(run["run_id"], []))
             for run in runs)
    return [c for c in found if c is not None]
