"""What a run costs the host it runs on: the host-wide settings a big point depends on, and the
memory and connection-tracking entries its connections take (issue 10).

Read from this machine's /proc and cgroup files, so only meaningful when the Docker engine is
local (tcplimits.engine.host.engine_is_local); the engine does not read them otherwise.

- host_facts(): fs.file-max, fs.nr_open, descriptors allocated (fs.file-nr), conntrack table
  size and count (the host namespace's), net.bridge.bridge-nf-call-iptables (bridged traffic
  through the host's netfilter), net.ipv4.tcp_mem and tcp_max_orphans, MemAvailable, and the
  TCP line of /proc/net/sockstat. `tcplimits probe` prints them; every run records them.
- container_memory(): one container's cgroup memory, split into kernel (kmem: socket, file,
  dentry and inode objects are charged to the cgroup of the process that owns the socket) and
  user (rss) bytes; cgroup v1 (cgroupfs) and v2 layouts.
- snapshot(): the host and every container at one moment; per_connection() turns two snapshots
  (before the first connect(), and with every connection held) into bytes per connection.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from tcplimits.engine.host import parse_sockstat
from tcplimits.model import hostlimits

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")

# The host sysctls host_facts records (their names are the model's: hostlimits).
SYSCTLS = hostlimits.HOST_SYSCTLS


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split()]
    except ValueError:
        return None


def read_sysctl(name: str, proc: Path = PROC) -> int | list[int] | None:
    """One host sysctl as an int (or a list for several values); None when absent."""
    values = _ints(_read(proc / "sys" / hostlimits.proc_sys(name)))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes: {"MemAvailable": ..., "Slab": ...}."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            out[key] = int(words[0]) * (1024 if words[1:2] == ["kB"] else 1)
    return out


def host_facts(proc: Path = PROC) -> dict[str, Any]:
    """The host settings and counters a point of many connections depends on."""
    facts: dict[str, Any] = {name: read_sysctl(name, proc) for name in SYSCTLS}
    file_nr = _ints(_read(proc / "sys" / hostlimits.proc_sys(hostlimits.FILE_NR)))
    facts[hostlimits.FILE_NR] = file_nr[0] if file_nr else None
    meminfo = parse_meminfo(_read(proc / "meminfo") or "")
    facts["MemTotal"] = meminfo.get("MemTotal")
    facts["MemAvailable"] = meminfo.get("MemAvailable")
    facts["Slab"] = meminfo.get("Slab")
    try:
        facts["sockstat_tcp"] = parse_sockstat(_read(proc / "net/sockstat") or "")
    except ValueError:  # no TCP line
        facts["sockstat_tcp"] = None
    facts["read_at"] = round(time.time(), 3)
    return facts


# --- container memory ---------------------------------------------------------------------

def _cgroup_dirs(container_id: str, root: Path) -> list[Path]:
    """Where a container's memory cgroup lives: cgroup v1 cgroupfs, v1 systemd, v2 layouts."""
    return [root / "memory" / "docker" / container_id,
            root / "memory" / "system.slice" / f"docker-{container_id}.scope",
            root / "system.slice" / f"docker-{container_id}.scope",
            root / "docker" / container_id]


def container_memory(container_id: str, root: Path = CGROUP) -> dict[str, int] | None:
    """{"total", "kernel", "user"} bytes charged to one container's cgroup, or None.
    v1: memory.usage_in_bytes, memory.kmem.usage_in_bytes, rss of memory.stat;
    v2: memory.current, and kernel + sock, anon of memory.stat."""
    for d in _cgroup_dirs(container_id, root):
        stat_text = _read(d / "memory.stat")
        if stat_text is None:
            continue
        stat = {k: int(v) for k, v in (line.split() for line in stat_text.splitlines()
                                        if len(line.split()) == 2 and line.split()[1].isdigit())}
        if (d / "memory.kmem.usage_in_bytes").exists():  # v1
            total = _ints(_read(d / "memory.usage_in_bytes"))
            kernel = _ints(_read(d / "memory.kmem.usage_in_bytes"))
            if not total or not kernel:
                return None
            return {"total": total[0], "kernel": kernel[0], "user": stat.get("rss", 0)}
        current = _ints(_read(d / "memory.current"))  # v2
        if not current:
            return None
        kernel = stat.get("kernel", stat.get("slab", 0) + stat.get("kernel_stack", 0)
                          + stat.get("pagetables", 0)) + stat.get("sock", 0)
        return {"total": current[0], "kernel": kernel, "user": stat.get("anon", 0)}
    return None


def snapshot(containers: Iterable[tuple[str, str]], proc: Path = PROC,
             root: Path = CGROUP) -> dict[str, Any]:
    """The host's counters and each container's memory, now. ``containers``: (role, id)."""
    memory = {role: container_memory(cid, root) for role, cid in containers}
    return {"host": host_facts(proc), "containers": memory}


def _sum(snap: dict[str, Any], key: str) -> int | None:
    values = [m[key] for m in snap["containers"].values() if m]
    if not values or len(values) != len(snap["containers"]):
        return None
    return sum(values)


def per_connection(before: dict[str, Any], held: dict[str, Any],
                   connections: int) -> dict[str, Any]:
    """Bytes per connection from a snapshot before the first connect() and one with every
    connection held (both ends of each connection are in the containers measured). Kernel
    and user memory of the containers' cgroups are the run's own; the host's Slab and
    sockstat mem count every process on the host, so they are recorded as a cross-check."""
    out: dict[str, Any] = {"connections": connections}
    for key in ("kernel", "user", "total"):
        a, b = _sum(before, key), _sum(held, key)
        out[f"{key}_bytes"] = b
        out[f"{key}_bytes_per_connection"] = (
            round((b - a) / connections) if connections and a is not None and b is not None
            else None)
    hb, hh = before["host"], held["host"]
    slab = (hh.get("Slab") - hb.get("Slab")) if hh.get("Slab") and hb.get("Slab") else None
    out["host_slab_bytes_per_connection"] = round(slab / connections) if slab and connections \
        else None
    tb, th = hb.get("sockstat_tcp") or {}, hh.get("sockstat_tcp") or {}
    out["host_tcp_mem_pages"] = th.get("mem")
    out["host_tcp_mem_pages_per_connection"] = (
        round((th["mem"] - tb["mem"]) / connections, 4)
        if connections and "mem" in th and "mem" in tb else None)
    out["host_sockets_per_connection"] = (
        round((th["alloc"] - tb["alloc"]) / connections, 3)
        if connections and "alloc" in th and "alloc" in tb else None)
    cb, ch = hb.get(hostlimits.CONNTRACK_COUNT), hh.get(hostlimits.CONNTRACK_COUNT)
    out["host_conntrack_count"] = ch
    out["host_conntrack_per_connection"] = (round((ch - cb) / connections, 3)
                                            if connections and cb is not None and ch is not None
                                            else None)
    return out


def conntrack_entries(server_ip: str, port: int, proc: Path = PROC) -> int | None:
    """Entries of the host's conntrack table for connections to ``server_ip``:``port`` (the
    run's own, whatever else the host tracks), or None when /proc/net/nf_conntrack cannot be
    read (root only). Read line by line: the table may hold millions of entries (~300 bytes
    each), never to be taken into memory at once."""
    needle, dport = f" dst={server_ip} ", f" dport={port} "
    count = 0
    try:
        with open(proc / "net/nf_conntrack", errors="replace") as table:
            for line in table:
                first = line.find(" src=", line.find(" src=") + 1)  # the reply tuple's start
                head = (line if first < 0 else line[:first]) + " "
                if needle in head and dport in head:
                    count += 1
    except OSError:
        return None
    return count
