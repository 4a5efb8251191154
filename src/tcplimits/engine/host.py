"""The TCP state of the host the experiments run on, and waiting until it is quiet.

Closed sockets of an earlier run (orphans retransmitting a FIN, TIME-WAIT entries) sit in the
kernel's global connection hash that every connect() walks, so a point timed right after
another one is slower for reasons that are not its own. Each run records this state before
and after it, and waits (bounded) for a quiet host before it starts connecting.

What is read, and why these files:
- /proc/net/sockstat, TCP line: ``orphan``, ``alloc`` and ``mem`` are kernel-wide counters
  (every network namespace, containers included); ``inuse`` and ``tw`` count only the
  reader's own namespace.
- /proc/slabinfo, ``tw_sock_TCP``: TIME-WAIT entries of every namespace (``tw_all``); root
  only, None otherwise.
- /proc/sys/net/netfilter/nf_conntrack_count: the host namespace's connection-tracking
  table, which bridged container traffic fills (None when the module is not loaded).

These are the files of the machine tcplimits runs on. They describe the engine's host only
when the engine is local (a unix socket, the default); for a remote engine (DOCKER_HOST
tcp://... or ssh://...) the state is recorded as unknown and every point is marked noisy,
since nothing vouches for its timings.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from tcplimits.model.hostlimits import CONNTRACK_COUNT as CONNTRACK_COUNT_SYSCTL, proc_sys

SOCKSTAT = Path("/proc/net/sockstat")
SLABINFO = Path("/proc/slabinfo")
CONNTRACK_COUNT = Path("/proc/sys") / proc_sys(CONNTRACK_COUNT_SYSCTL)
SOCKSTAT_KEYS = ("inuse", "orphan", "tw", "alloc", "mem")
POLL_S = 1.0

Reader = Callable[[], dict[str, Any]]


def parse_sockstat(text: str) -> dict[str, int]:
    """The ``TCP:`` line of /proc/net/sockstat as {inuse, orphan, tw, alloc, mem}."""
    for line in text.splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            pairs = dict(zip(words[::2], words[1::2]))
            return {key: int(pairs[key]) for key in SOCKSTAT_KEYS if key in pairs}
    raise ValueError("no TCP line in sockstat")


def parse_slab_tw(text: str) -> int | None:
    """Active TIME-WAIT objects (all namespaces) from /proc/slabinfo, or None."""
    for line in text.splitlines():
        cols = line.split()
        if cols and cols[0] == "tw_sock_TCP":
            return int(cols[1])
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def engine_is_local(base_url: str) -> bool:
    """Does the Docker engine at ``base_url`` (the SDK's ``client.api.base_url``) run on this
    machine? The SDK names a unix socket ``http+docker://localhost`` and an ssh engine
    ``http+docker://ssh``; a tcp engine is local when its host is a loopback name."""
    url = urlsplit(base_url)
    if url.scheme == "http+docker":
        return url.hostname in ("localhost", "localnpipe")
    return url.hostname in ("localhost", "127.0.0.1", "::1")


def read_state(local: bool = True) -> dict[str, Any]:
    """One snapshot: sockstat's TCP counters, tw_all, conntrack, the time, and where from."""
    state: dict[str, Any] = {key: None for key in SOCKSTAT_KEYS}
    state.update(tw_all=None, conntrack=None, source=None, at=round(time.time(), 3))
    if not local:
        state["source"] = ("unknown: the Docker engine is remote, this machine's /proc is not "
                           "its host")
        return state
    text = _read(SOCKSTAT)
    if text is None:
        state["source"] = f"unknown: {SOCKSTAT} not readable"
        return state
    state.update(parse_sockstat(text))
    slab = _read(SLABINFO)
    state["tw_all"] = parse_slab_tw(slab) if slab else None
    count = _read(CONNTRACK_COUNT)
    state["conntrack"] = int(count) if count and count.strip().isdigit() else None
    state["source"] = "local /proc"
    return state


def leftover_sockets(state: dict[str, Any]) -> int | None:
    """Closed sockets still in the kernel: orphans plus TIME-WAIT entries (all namespaces
    when slabinfo is readable, else the host namespace's)."""
    if state.get("orphan") is None:
        return None
    tw = state["tw_all"] if state.get("tw_all") is not None else state.get("tw") or 0
    return state["orphan"] + tw


@dataclass(frozen=True)
class Quiet:
    """Outcome of waiting for a quiet host."""

    before: dict[str, Any]  # the last reading: the state the point starts connecting in
    waited_s: float
    noisy: bool
    reason: str | None


def wait_quiet(threshold: int, timeout_s: float, *, read: Reader = read_state,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S,
               waiting: Callable[[dict[str, Any]], None] | None = None) -> Quiet:
    """Poll the host until at most ``threshold`` closed sockets linger (orphans + TIME-WAIT),
    for at most ``timeout_s`` seconds. A host that never gets quiet is not an error: the
    point runs anyway and is marked noisy with the reason. ``waiting`` is told the state
    once, when the first reading is not quiet."""
    start = clock()
    state = read()
    first = True
    while True:
        left = leftover_sockets(state)
        if left is None:
            return Quiet(state, clock() - start, True,
                         f"host TCP state {state.get('source') or 'unknown'}")
        if left <= threshold:
            return Quiet(state, clock() - start, False, None)
        waited = clock() - start
        if waited >= timeout_s:
            return Quiet(state, waited, True,
                         f"host not quiet after {waited:.0f} s: {state['orphan']:,} orphaned "
                         f"and {left - state['orphan']:,} TIME-WAIT sockets (threshold "
                         f"{threshold:,})")
        if first and waiting is not None:
            waiting(state)
        first = False
        sleep(min(poll_s, max(0.0, timeout_s - waited)))
        state = read()


# ----------------------------------------------------------------- what a run's namespaces keep

# Sockets that outlive the process that closed them: an orphan is in one of the first four,
# a graceful close ends in TIME_WAIT, a peer that never closed stays in CLOSE_WAIT.
LINGERING_STATES = ("FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK", "TIME_WAIT", "CLOSE_WAIT")


class NamespaceWatch:
    """Keeps the network namespaces of some containers alive after they are removed, by a
    hardened idle container joined to each, so that what the run left in them can be
    counted exactly (this machine's host-wide counters move with every other run on the
    engine). Needs a local engine and permission to read /proc/<pid>/net. For tests and
    benchmarks of teardown; remove() when done."""

    def __init__(self, client, image: str, containers: dict[str, Any], run_id: str):
        from tcplimits import LABEL, ROLE_LABEL, RUN_LABEL

        # Not the run instance's labels: the engine's teardown sweeps those, and the watch
        # must outlive it.
        labels = {LABEL: "1", RUN_LABEL: run_id, ROLE_LABEL: "watch"}
        self.watchers: dict[str, Any] = {}
        for role, container in containers.items():
            self.watchers[role] = client.containers.run(
                image, ["python3", "-c", "import time; time.sleep(3600)"], detach=True,
                network_mode=f"container:{container.id}", labels=labels,
                cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                user="65534:65534")
        self.pids = {}
        for role, watcher in self.watchers.items():
            watcher.reload()
            self.pids[role] = watcher.attrs["State"]["Pid"]

    def lingering(self) -> dict[str, dict[str, int]]:
        """Per watched role: sockets in each lingering state, now."""
        from tcplimits.agents.common import tcp_sockets

        out = {}
        for role, pid in self.pids.items():
            if not Path(f"/proc/{pid}/net/tcp").exists():
                raise RuntimeError(f"the watch of {role}'s namespace (pid {pid}) is gone")
            states = collections.Counter(state for _, _, state in tcp_sockets(f"/proc/{pid}/net"))
            out[role] = {state: states.get(state, 0) for state in LINGERING_STATES}
        return out

    def remove(self) -> None:
        for watcher in self.watchers.values():
            try:
                watcher.remove(force=True)
            except Exception:  # already gone
                pass
