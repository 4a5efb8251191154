"""The host's own ceiling (issue 22, pure): the most connections this host can hold with both
ends on it and its settings as they are, the limit that binds, the next one and its margin.

Each bound is counted in connections from the host's facts (engine.footprint.host_facts) and
the engine's nofile cap, with the formulas of tcplimits.model.hostlimits and .hold:

- fs.file-max: two descriptors per connection and a few per agent process, on top of what
  the host already holds, keeping FILE_MAX_HEADROOM of the table for everything else (at the
  limit every unprivileged process on the host gets ENFILE);
- memory: hostlimits.memory_needed (kernel and user bytes per connection, an interpreter per
  agent process) within MemAvailable less hostlimits.MEMORY_HEADROOM, so that the host is
  never driven into the OOM killer;
- conntrack (bridge only): the room left in the tables that track the connections;
- a point's own layout (only when one is given): what its processes, ports and server can
  hold (model.predict), e.g. the engine's nofile cap seen through a few processes.

The agents need processes as the count grows (each holds at most the engine's nofile cap), so
memory and descriptors are searched, not divided. Bounds a run must never reach (fs.file-max,
memory: "refused") are held by giving each client process its share; the others stop the run
themselves, as the model predicts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping

from tcplimits.config.params import FIELDS, NOFILE_MAX, RunParams
from tcplimits.model import hostlimits
from tcplimits.model.hold import (CLIENT_BASELINE_FDS, SERVER_BASELINE_FDS, auto_server_workers,
                                  limit_reason, predict)

CEILING = "ceiling"  # the grid value of `connections`
# Keep this share of fs.file-max for the rest of the host (1%: ~24,700 descriptors here).
FILE_MAX_HEADROOM = 0.01
# The layout `tcplimits ceiling` proposes: ports 1024-65535, 10 processes per client
# container (config/million.yaml's), each at the engine's nofile cap.
PORT_RANGE = "1024-65535"
PROCS_PER_CLIENT = 10
# Reached by a run or never: fs.file-max and memory harm the whole host, so a run is held
# below them; the others end the run, and only the run.
STOPS, REFUSED = "stops", "refused"
LAYOUT = "layout"
MOST_SHARE = int(FIELDS["max_connections"].maximum)  # the name prefix of a point's own bound ("layout: descriptors")


class CeilingError(ValueError):
    """The ceiling cannot be resolved here (no host facts: the engine is not local)."""


@dataclass(frozen=True)
class Bound:
    """One limit, counted in connections."""

    name: str                 # the setting (fs.file-max, MemAvailable, nf_conntrack_max) or
                              # "layout: <model limit>"
    value: int | None         # its value here
    connections: int          # the most connections it allows
    errno: str | None         # what the clients would see at it
    reach: str                # STOPS (the run may meet it) or REFUSED (never reached)
    why: str                  # how it was counted
    raise_with: str | None = None  # the operator's command (or step) that lifts it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ceiling:
    """The most connections, for one network mode (and layout, when a point gives one)."""

    network: str
    connections: int
    binding: Bound
    next: Bound | None
    bounds: list[Bound] = field(default_factory=list)   # smallest first
    layout: dict[str, int] = field(default_factory=dict)  # clients, procs, server_workers...

    @property
    def margin(self) -> int | None:
        """How many connections more the next limit allows."""
        return None if self.next is None else self.next.connections - self.connections

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "connections": self.connections,
                "binding": self.binding.to_dict(),
                "next": self.next.to_dict() if self.next else None, "margin": self.margin,
                "bounds": [b.to_dict() for b in self.bounds], "layout": dict(self.layout)}


def largest(fits: Callable[[int], bool], hi: int) -> int:
    """The largest n in [0, hi] with fits(n), for fits true up to some n and false after."""
    lo = 0
    if not fits(0):
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def layout_for(connections: int, network: str, nofile_cap: int) -> RunParams:
    """A layout that holds ``connections`` with every process at the engine's nofile cap:
    PROCS_PER_CLIENT processes per client container (more when 32 containers are not
    enough) and, on a bridge, enough containers that no port pool is exhausted."""
    nofile = min(nofile_cap, NOFILE_MAX)
    per_proc = max(1, nofile - CLIENT_BASELINE_FDS)
    processes = max(1, math.ceil(connections / per_proc))
    most_clients, most_procs = int(FIELDS["clients"].maximum), int(FIELDS["procs"].maximum)
    clients = math.ceil(processes / PROCS_PER_CLIENT)
    if network == "bridge":  # one pool of the range per client container (less DNS's port)
        pool = RunParams(port_range=PORT_RANGE).port_count - 1
        clients = max(clients, math.ceil(connections / pool))
    clients = max(1, min(most_clients, clients))
    procs = min(most_procs, math.ceil(processes / clients))
    share = math.ceil(connections / (clients * procs))
    return RunParams(network=network, port_range=PORT_RANGE, nofile=nofile, clients=clients,
                     procs=procs, max_connections=min(MOST_SHARE, max(1, share)))


def server_workers(params: RunParams, nofile_cap: int) -> int:
    if params.server_workers == "auto":
        return auto_server_workers(params, params.server_nofile or nofile_cap)
    return int(params.server_workers)


def with_share(params: RunParams, connections: int) -> RunParams:
    """``params`` with each client process stopping at its share of ``connections``."""
    share = min(MOST_SHARE, max(1, connections // (params.clients * params.procs)))
    if params.max_connections is not None:
        share = min(share, params.max_connections)
    return replace(params, connections=None, max_connections=share)


def file_max_fits(facts: Mapping[str, Any], connections: int, processes: int) -> bool:
    file_max, used = facts[hostlimits.FILE_MAX], facts.get("fs.file-nr") or 0
    need = (used + connections * hostlimits.DESCRIPTORS_PER_CONNECTION
            + processes * SERVER_BASELINE_FDS)
    return need <= file_max * (1 - FILE_MAX_HEADROOM)


def memory_fits(facts: Mapping[str, Any], connections: int, processes: int) -> bool:
    usable = facts[hostlimits.MEMORY] * (1 - hostlimits.MEMORY_HEADROOM)
    return hostlimits.memory_needed(connections, processes) <= usable


def ceiling(network: str, facts: Mapping[str, Any], nofile_cap: int,
            point: RunParams | None = None) -> Ceiling:
    """The host's ceiling for ``network``: with the layout layout_for proposes, or with the
    processes of ``point`` (each at its share) and what that layout itself can hold."""
    def layout(n: int) -> RunParams:
        return layout_for(n, network, nofile_cap) if point is None else with_share(point, n)

    def processes(n: int) -> int:
        p = layout(n)
        return hostlimits.processes(p, server_workers(p, nofile_cap))

    bounds: list[Bound] = []
    if facts.get(hostlimits.FILE_MAX) is not None:
        hi = facts[hostlimits.FILE_MAX] // hostlimits.DESCRIPTORS_PER_CONNECTION
        n = largest(lambda n: file_max_fits(facts, n, processes(n)), hi)
        bounds.append(Bound(
            hostlimits.FILE_MAX, facts[hostlimits.FILE_MAX], n, "ENFILE", REFUSED,
            f"two descriptors per connection (both ends on this host) and "
            f"{SERVER_BASELINE_FDS} per agent process, on top of the "
            f"{facts.get('fs.file-nr') or 0:,} already open, keeping "
            f"{FILE_MAX_HEADROOM:.0%} for the rest of the host"))
    if facts.get(hostlimits.MEMORY) is not None:
        per = hostlimits.KERNEL_BYTES_PER_CONNECTION + hostlimits.USER_BYTES_PER_CONNECTION
        n = largest(lambda n: memory_fits(facts, n, processes(n)), facts[hostlimits.MEMORY] // per)
        bounds.append(Bound(
            hostlimits.MEMORY, facts[hostlimits.MEMORY], n, "ENOMEM", REFUSED,
            f"{hostlimits.KERNEL_BYTES_PER_CONNECTION:,} bytes of kernel memory (both sockets, "
            f"files, inodes: the host's slab) and {hostlimits.USER_BYTES_PER_CONNECTION} of "
            f"the agents' per connection, {hostlimits.PROCESS_BYTES // 2**20} MiB per agent "
            f"process, keeping {hostlimits.MEMORY_HEADROOM:.0%} of MemAvailable for the rest "
            "of the host (never the OOM killer)"))
    probe = point or RunParams(network=network)
    conntrack = next((lim for lim in hostlimits.host_limits(probe, facts, 0, 0)
                      if lim.setting == hostlimits.CONNTRACK_MAX), None)
    if conntrack is not None and conntrack.room is not None:
        bounds.append(Bound(hostlimits.CONNTRACK_MAX, conntrack.value, conntrack.room,
                            "ETIMEDOUT", STOPS, conntrack.why))
    if point is not None:
        bounds.append(layout_bound(point, nofile_cap))
    if not bounds:
        raise CeilingError("no host limit is known: the host's facts were not read")
    bounds.sort(key=lambda b: b.connections)
    # Each bound's command lifts it to the next one above it.
    bounds = [replace(b, raise_with=raise_command(
        b, facts, bounds[i + 1].connections if i + 1 < len(bounds) else None, processes))
        for i, b in enumerate(bounds)]
    binding, nxt = bounds[0], (bounds[1] if len(bounds) > 1 else None)
    chosen = layout(binding.connections)
    workers = server_workers(chosen, nofile_cap)
    return Ceiling(network, binding.connections, binding, nxt, bounds,
                   {"clients": chosen.clients, "procs": chosen.procs, "nofile": chosen.nofile,
                    "per_process": chosen.max_connections or 0, "server_workers": workers,
                    "processes": hostlimits.processes(chosen, workers)})


def layout_bound(point: RunParams, nofile_cap: int) -> Bound:
    """What a point's own processes, ports and server can hold (model.predict, no share)."""
    unbounded = replace(point, connections=None)
    server_nofile = unbounded.server_nofile or nofile_cap
    pred = predict(unbounded, server_nofile=server_nofile,
                   server_workers=server_workers(unbounded, nofile_cap))
    return Bound(f"{LAYOUT}: {pred.limit}", min(point.nofile, nofile_cap), pred.total,
                 pred.errno, STOPS,
                 f"{point.clients} x {point.procs} client processes: "
                 + limit_reason(unbounded, pred))


def raise_command(bound: Bound, facts: Mapping[str, Any], target: int | None,
                  processes: Callable[[int], int]) -> str:
    """What lifts ``bound`` to ``target`` connections (the next limit; twice its own when
    nothing else is known)."""
    target = target or 2 * max(1, bound.connections)
    if bound.name == hostlimits.FILE_MAX:
        need = ((facts.get("fs.file-nr") or 0) + target * hostlimits.DESCRIPTORS_PER_CONNECTION
                + processes(target) * SERVER_BASELINE_FDS) / (1 - FILE_MAX_HEADROOM)
        return f"sysctl -w {hostlimits.FILE_MAX}={hostlimits.round_up(math.ceil(need))}"
    if bound.name == hostlimits.CONNTRACK_MAX:
        used = (bound.value or 0) - bound.connections
        return f"sysctl -w {hostlimits.CONNTRACK_MAX}={hostlimits.round_up(used + target)}"
    if bound.name == hostlimits.MEMORY:
        need = (hostlimits.memory_needed(target, processes(target))
                / (1 - hostlimits.MEMORY_HEADROOM))
        return (f"no setting: free or add memory ({target:,} connections need "
                f"{need / 2**30:.1f} GiB available)")
    return "more client processes (--clients, --procs) or a wider --port-range"


def resolve(params: RunParams, facts: Mapping[str, Any] | None,
            nofile_cap: int) -> tuple[RunParams, dict[str, Any] | None]:
    """``connections`` resolved: the number (the host's ceiling for this point when asked
    "ceiling") and the share each client process stops at, or the params unchanged when it
    is not set. Returns (params to run, the record of the resolution)."""
    asked = params.connections
    if asked is None:
        return params, None
    found = None
    if facts:
        try:
            found = ceiling(params.network, facts, nofile_cap, point=params)
        except CeilingError:
            found = None
    if asked == CEILING:
        if found is None:
            raise CeilingError("connections: ceiling needs the host's facts, read where the "
                               "engine runs (the engine is not on this machine)")
        number = found.connections
        # A limit only the run meets ends it where the model says; never a host-wide one.
        shared = found.binding.reach == REFUSED
    else:
        number, shared = int(asked), True
    run = with_share(params, number) if shared else replace(params, connections=None)
    run = replace(run, connections=number)
    return run, {"asked": asked, "connections": number,
                 "per_process": run.max_connections,
                 "held_by": "share" if shared else "limit",
                 "predicted": found.to_dict() if found else None}
