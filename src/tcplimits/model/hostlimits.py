"""The host-wide limits a point of many connections meets (pure, no I/O; issue 10).

tcplimits never changes a host setting. For each setting a point depends on, this module says
its value, the value the point needs, at how many connections it would stop the point and
with which errno, and the command an operator would use to raise it; where a way around stays
inside the experiment's own namespaces, it names the parameter.

Both ends of every connection are on this host, so each connection costs two descriptors, two
sockets' kernel memory and, on a bridge, conntrack entries:

- conntrack (network bridge only): with net.bridge.bridge-nf-call-iptables = 1 the host's
  netfilter sees bridged packets, so the host namespace tracks every connection (one entry
  each, measured) in a table shared with everything else on the host; Docker's embedded DNS
  puts NAT rules in the server's namespace, which tracks its own (one entry each, measured).
  Each namespace counts against the same nf_conntrack_max. A full table drops the SYN ("
  nf_conntrack: table full, dropping packet"; established entries are ASSURED and never
  dropped early), so the client's connect() times out: ETIMEDOUT. On loopback no packet
  crosses a bridge and the namespace has no rules: no entry at all (measured: 0).
- fs.file-max: descriptors of the whole host; past it socket() and accept() fail with ENFILE
  for every process on the host, so a point that would reach it is refused (unsupported).
- memory: KERNEL_BYTES_PER_CONNECTION (both sockets, their files, dentries and inodes) plus
  the agents' processes; a point whose need exceeds MemAvailable is refused (unsupported).
- net.ipv4.tcp_mem: counts socket buffer pages; idle held connections use none (measured 0.0
  pages per connection), so it does not bound holding; recorded for the report.
- net.ipv4.tcp_max_orphans: closed sockets still finishing their close; a teardown that closes
  normally (FIN) leaves up to one per connection and past the limit the kernel resets them
  ("too many orphaned sockets"). The agents reset every connection when stopped (SO_LINGER 0,
  --close abort) before their containers are removed, so teardown needs none.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from tcplimits.config.params import RunParams

# Measured here (bench_million / tests): host Slab grew 8,829 bytes per loopback connection
# held (both ends), of which the containers' cgroups were charged ~5,100 (accepted sockets
# are allocated in softirq context, outside any cgroup). /proc/slabinfo object sizes agree:
# per socket TCP 2,368 + sock_inode_cache 832 + filp 192 + dentry 192 = 3,584 bytes, twice
# per connection, plus bind buckets and hash entries; a conntrack entry (bridge) is 256 bytes
# per tracking namespace. Rounded up for sizing.
KERNEL_BYTES_PER_CONNECTION = 9 * 1024
# The agents' own memory: a Python interpreter per process (~8 MiB rss measured) and what a
# held descriptor costs them: measured 172-191 bytes per connection (the containers' rss,
# benchmarks/results/million*.json), rounded up.
PROCESS_BYTES = 16 * 2**20
USER_BYTES_PER_CONNECTION = 192
# Keep this share of MemAvailable for everything else on the host.
MEMORY_HEADROOM = 0.1
# A connection's descriptors: the client's socket and the server's accepted socket.
DESCRIPTORS_PER_CONNECTION = 2
CONNTRACK_ENTRIES_PER_CONNECTION = 1  # per namespace that tracks (measured)

# The host's sysctls, by their sysctl(8) names (engine.footprint.host_facts reads them).
CONNTRACK_MAX = "net.netfilter.nf_conntrack_max"
CONNTRACK_COUNT = "net.netfilter.nf_conntrack_count"
FILE_MAX = "fs.file-max"
FILE_NR = "fs.file-nr"  # descriptors allocated (its first value)
NR_OPEN = "fs.nr_open"
TCP_MEM = "net.ipv4.tcp_mem"
MAX_ORPHANS = "net.ipv4.tcp_max_orphans"
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
# The settings host_facts records, in run.json's order.
HOST_SYSCTLS = (FILE_MAX, NR_OPEN, CONNTRACK_MAX, CONNTRACK_COUNT, BRIDGE_NF, MAX_ORPHANS, TCP_MEM)
MEMORY = "MemAvailable"


def proc_sys(name: str) -> str:
    """A sysctl's file under /proc/sys: its name with the dots as slashes."""
    return name.replace(".", "/")


@dataclass(frozen=True)
class HostLimit:
    """One host setting against one point."""

    setting: str               # the sysctl (or meminfo key)
    value: int | None          # its value on this host (None: unknown)
    needed: int                # the value this point needs
    stops_at: int | None       # connections at which it stops the point; None: it does not
    errno: str | None          # what the clients see when it stops them
    effect: str                # "stops" (the point ends there), "refused" (not run), "teardown"
    command: str | None        # what an operator would run to raise it
    way_around: str | None     # a parameter that keeps the point inside its own namespaces
    why: str                   # one sentence: what the setting bounds and how it was counted
    room: int | None = None    # connections it leaves room for on this host (None: no bound)

    @property
    def binds(self) -> bool:
        return self.stops_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "binds": self.binds}

    def sentence(self) -> str:
        value = "unknown" if self.value is None else f"{self.value:,}"
        text = f"{self.setting} is {value} here; this point needs {self.needed:,} ({self.why})"
        if self.stops_at is not None and self.effect == "stops":
            text += f"; it stops the point at {self.stops_at:,} connections with {self.errno}"
        elif self.effect == "refused" and self.stops_at is not None:
            text += "; the point is not run"
        elif self.effect == "teardown" and self.stops_at is not None:
            text += ("; past it the kernel resets orphans (\"too many orphaned sockets\") "
                     "instead of closing them")
        if self.stops_at is not None and self.command:
            text += f". An operator raises it with: {self.command}"
        if self.stops_at is not None and self.way_around:
            text += f". Or, inside the experiment's own namespaces: {self.way_around}"
        return text + "."


def processes(params: RunParams, server_workers: int) -> int:
    return params.clients * params.procs + server_workers


def memory_needed(connections: int, procs: int) -> int:
    """Bytes of host memory a point needs: kernel and user memory per connection held (both
    ends on this host) plus a Python interpreter per agent process."""
    return (connections * (KERNEL_BYTES_PER_CONNECTION + USER_BYTES_PER_CONNECTION)
            + procs * PROCESS_BYTES)


def conntrack_namespaces(params: RunParams, facts: Mapping[str, Any]) -> list[str]:
    """The namespaces that track this point's connections."""
    if params.network == "loopback":
        return []
    tracked = ["server"]  # Docker's embedded DNS: NAT rules in every container's namespace
    if facts.get(BRIDGE_NF) == 1:
        tracked.append("host")
    return tracked


def host_limits(params: RunParams, facts: Mapping[str, Any], demand: int,
                server_workers: int) -> list[HostLimit]:
    """Every host setting ``demand`` connections depend on, with what the point needs and
    where (if anywhere) it stops it. ``facts``: footprint.host_facts() keys."""
    out: list[HostLimit] = []
    ct_max, ct_count = facts.get(CONNTRACK_MAX), facts.get(CONNTRACK_COUNT)
    tracked = conntrack_namespaces(params, facts)
    if ct_max is not None and tracked:
        # The host namespace's table already holds what else runs on the host.
        used = (ct_count or 0) if "host" in tracked else 0
        room = max(0, ct_max - used)
        # nat gateway: the host sees both legs (client -> router, router -> server)
        per = CONNTRACK_ENTRIES_PER_CONNECTION * (2 if params.gateway else 1)
        needed = used + demand * per
        where = " and ".join(f"the {n} namespace" for n in tracked)
        out.append(HostLimit(
            CONNTRACK_MAX, ct_max, needed,
            room // per if room < demand * per else None, "ETIMEDOUT", "stops",
            f"sysctl -w {CONNTRACK_MAX}={round_up(needed)}",
            "--network loopback (no bridge, no netfilter rules: no conntrack entries)",
            f"{where} track{'s' if len(tracked) == 1 else ''} "
            + ("one entry per connection" if per == 1 else "one entry per connection per leg "
               "(the host sees both legs through the NAT router)")
            + (f", {used:,} already used by the host" if "host" in tracked else "")
            + "; a full table drops SYNs", room))
    file_max, file_nr = facts.get(FILE_MAX), facts.get(FILE_NR)
    if file_max is not None:
        used = file_nr or 0
        needed = used + demand * DESCRIPTORS_PER_CONNECTION
        room = max(0, (file_max - used) // DESCRIPTORS_PER_CONNECTION)
        out.append(HostLimit(
            FILE_MAX, file_max, needed, room if room < demand else None, "ENFILE", "refused",
            f"sysctl -w {FILE_MAX}={round_up(needed)}", None,
            f"two descriptors per connection, both ends on this host, {used:,} already open; "
            "at the limit every process on the host gets ENFILE", room))
    available = facts.get(MEMORY)
    if available is not None:
        procs = processes(params, server_workers)
        needed = memory_needed(demand, procs)
        usable = int(available * (1 - MEMORY_HEADROOM))
        per = KERNEL_BYTES_PER_CONNECTION + USER_BYTES_PER_CONNECTION
        room = max(0, (usable - procs * PROCESS_BYTES) // per)
        out.append(HostLimit(
            MEMORY, available, needed, room if room < demand else None, "ENOMEM", "refused",
            None, None,
            f"{KERNEL_BYTES_PER_CONNECTION + USER_BYTES_PER_CONNECTION:,} bytes per "
            f"connection and {PROCESS_BYTES // 2**20} MiB per agent process ({procs}), keeping "
            f"{MEMORY_HEADROOM:.0%} of MemAvailable for the rest of the host", room))
    tcp_mem = facts.get(TCP_MEM)
    if isinstance(tcp_mem, list) and len(tcp_mem) == 3:
        out.append(HostLimit(
            TCP_MEM, tcp_mem[2], 0, None, None, "stops", None, None,
            "pages of socket buffers; held idle connections queue no data and use none"))
    orphans = facts.get(MAX_ORPHANS)
    if orphans is not None:
        out.append(HostLimit(
            MAX_ORPHANS, orphans, 0, None, None, "teardown", None, None,
            f"the agents reset every connection when stopped (SO_LINGER 0), so teardown "
            f"leaves no orphan; closed with FINs, the {demand:,} connections could leave one "
            "each"))
    return out


def from_record(value: Any) -> list[HostLimit]:
    """The host limits recorded with a run: run.json's host_limits (dicts) or the dataset's
    host_limits column (the same as JSON text)."""
    import json

    if isinstance(value, str):
        value = json.loads(value)
    return [HostLimit(**{k: v for k, v in lim.items() if k != "binds"})
            for lim in value or []]


def binding(limits: list[HostLimit]) -> HostLimit | None:
    """The host limit that stops the point first (refusals excluded)."""
    stops = [lim for lim in limits if lim.effect == "stops" and lim.stops_at is not None]
    return min(stops, key=lambda lim: lim.stops_at) if stops else None


def refusal(limits: list[HostLimit]) -> str | None:
    """Why the point must not run on this host, or None."""
    refused = [lim for lim in limits if lim.effect == "refused" and lim.stops_at is not None]
    return "; ".join(lim.sentence() for lim in refused) or None


def round_up(value: int) -> int:
    """A value an operator would type: the need rounded up to two significant digits."""
    if value <= 0:
        return 0
    step = 10 ** max(0, int(math.log10(value)) - 1)
    return math.ceil(value / step) * step
