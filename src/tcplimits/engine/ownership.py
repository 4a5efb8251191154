"""Who owns a resource on the engine, and whether that owner is provably dead.

Every container and network a run creates carries its owner's identity in a label; the sweep
of leftovers removes a resource only when its owner is provably dead. A bare ``host:pid`` is
not enough: two runs in different PID namespaces on one engine (CI jobs in containers that
share the Docker socket) can have the same host name and see each other's pid as "no such
process". The identity is therefore

    v2:<boot id>:<pid namespace dev:inode>:<pid>:<start time>

- boot id (/proc/sys/kernel/random/boot_id): the kernel the owner ran on, since its boot;
- pid namespace (/proc/self/ns/pid): the namespace in which <pid> means something;
- pid and start time (field 22 of /proc/<pid>/stat, clock ticks since boot): the process,
  not a later one that reused the pid.

An owner is dead only if it ran on our kernel, since this boot, in our PID namespace, and no
process with its pid and start time exists there now. Anything else (another namespace,
another kernel or boot, an old-style or missing label, /proc unreadable) is ``UNKNOWN`` and
is never removed by the automatic sweep; ``tcplimits clean --all --yes`` removes it by hand.

A pid missing from /proc is not proof of death: /proc mounted with ``hidepid=1/2`` (a common
hardening of shared hosts) hides other users' processes. ``kill(pid, 0)`` tells the two
apart: ESRCH is no such process, EPERM is a process we may not signal (alive, someone else's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

PREFIX = "v2"


class Liveness(str, Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # cannot be proven dead: never swept automatically


@dataclass(frozen=True)
class Owner:
    boot_id: str
    pid_ns: str  # "<dev>:<inode>" of /proc/<pid>/ns/pid
    pid: int
    start_time: int  # clock ticks since boot, from /proc/<pid>/stat

    def label(self) -> str:
        return f"{PREFIX}:{self.boot_id}:{self.pid_ns}:{self.pid}:{self.start_time}"

    @classmethod
    def parse(cls, label: str | None) -> "Owner | None":
        """The owner a label names, or None for an old-style, missing or garbled label."""
        parts = (label or "").split(":")
        if len(parts) != 6 or parts[0] != PREFIX:
            return None
        _, boot_id, dev, ino, pid, start = parts
        if not (dev.isdigit() and ino.isdigit() and pid.isdigit() and start.isdigit()):
            return None
        return cls(boot_id, f"{dev}:{ino}", int(pid), int(start))


def _boot_id(proc: str = "/proc") -> str:
    with open(f"{proc}/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def _pid_ns(pid: int | str = "self", proc: str = "/proc") -> str:
    st = os.stat(f"{proc}/{pid}/ns/pid")
    return f"{st.st_dev}:{st.st_ino}"


def start_time(pid: int | str, proc: str = "/proc") -> int:
    """Field 22 of /proc/<pid>/stat. The command name (field 2) may hold spaces and
    parentheses, so fields are counted after its closing parenthesis."""
    with open(f"{proc}/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


@lru_cache(maxsize=None)
def _me(pid: int) -> Owner:
    return Owner(_boot_id(), _pid_ns(), pid, start_time("self"))


def current() -> Owner:
    """This process (recomputed after a fork: the pid is part of the cache key)."""
    return _me(os.getpid())


def liveness(label: str | None, proc: str = "/proc") -> Liveness:
    """Is the owner named by ``label`` provably alive, provably dead, or neither?"""
    owner = Owner.parse(label)
    if owner is None:
        return Liveness.UNKNOWN
    try:
        if owner.boot_id != _boot_id(proc) or owner.pid_ns != _pid_ns("self", proc):
            return Liveness.UNKNOWN
        # A /proc mounted for another PID namespace (unshare --pid without --mount-proc)
        # would answer for other processes than the owner's pid.
        if os.readlink(f"{proc}/self") != str(os.getpid()):
            return Liveness.UNKNOWN
    except OSError:
        return Liveness.UNKNOWN
    try:
        started = start_time(owner.pid, proc)
    except FileNotFoundError:
        # Absent, or hidden by hidepid: only the kernel's own answer proves it gone.
        return Liveness.DEAD if _no_such_process(owner.pid) else Liveness.UNKNOWN
    except (OSError, ValueError, IndexError):
        return Liveness.UNKNOWN
    # Same pid, later start: the owner died and its pid was reused.
    return Liveness.ALIVE if started == owner.start_time else Liveness.DEAD


def _no_such_process(pid: int) -> bool:
    """True only when the kernel says no process has ``pid`` in our namespace (ESRCH). A
    process we may not signal (EPERM), or that we can signal but not see in /proc, exists:
    its start time cannot be checked, so it is not provably a different, later process."""
    if pid <= 0:
        return False  # 0 and negatives name process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists
        return False
    return False
