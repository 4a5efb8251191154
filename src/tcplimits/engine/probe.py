"""Engine facts every run records: versions, kernel, conntrack room, and the highest nofile
the engine gives a container.

Only the nofile cap is cached (measured by bisection over ~20 container starts, once per
engine id, version and kernel: none of it can change without changing the key). Everything
an operator can change between two runs (nf_conntrack_max above all: the report tells them
how) is read again for each run; a cache that cannot be read or does not hold a plausible
cap for this engine is measured again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import Ulimit

from tcplimits import LABEL, ROLE_LABEL, results
from tcplimits.config.params import NOFILE_MAX
from tcplimits.engine.cleanup import owner_labels
from tcplimits.engine.events import Log, stderr_log
from tcplimits.engine.plan import HELPER_LIMITS, hardening
from tcplimits.engine.record import now
from tcplimits.model.hostlimits import CONNTRACK_MAX, proc_sys


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tcplimits"


def _probe_container(client, image: str, nofile: int | None, command: list[str]):
    kwargs = dict(hardening(), **HELPER_LIMITS, network_disabled=True,
                  labels={LABEL: "1", ROLE_LABEL: "probe", **owner_labels()})
    if nofile is not None:
        kwargs["ulimits"] = [Ulimit(name="nofile", soft=nofile, hard=nofile)]
    return client.containers.create(image, command, **kwargs)


def _remove_own_probes(client) -> None:
    """Every probe container this process created (by its owner label), best effort."""
    from tcplimits import OWNER_LABEL
    from tcplimits.engine.cleanup import owner, shielded

    mine = [f"{ROLE_LABEL}=probe", f"{OWNER_LABEL}={owner()}"]
    with shielded():
        try:
            for container in client.containers.list(all=True, sparse=True,
                                                    filters={"label": mine}):
                container.remove(force=True)
        except docker.errors.APIError:
            pass


def _nofile_allowed(client, image: str, nofile: int) -> bool:
    """Can a container start with this nofile? An engine that may not raise its own limit
    (rootless, some sandboxes) fails the start: "error setting rlimit type 7"."""
    container = _probe_container(client, image, nofile, ["python3", "-c", "pass"])
    try:
        container.start()
        container.wait(timeout=60)
        return True
    except docker.errors.APIError as err:
        if "rlimit" in str(err) or "operation not permitted" in str(err):
            return False
        raise
    finally:
        container.remove(force=True)


def measure_nofile_cap(client, image: str) -> int:
    """The highest nofile the engine gives a container, by bisection over container starts."""
    if _nofile_allowed(client, image, NOFILE_MAX):
        return NOFILE_MAX
    lo, hi = 1024, NOFILE_MAX  # lo is allowed, hi is not
    if not _nofile_allowed(client, image, lo):
        raise RuntimeError(f"the engine cannot start a container even with nofile {lo}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _nofile_allowed(client, image, mid) else (lo, mid)
    return lo


def _read_in_container(client, image: str, path: str) -> str | None:
    container = _probe_container(client, image, None, ["python3", "-c",
                                                       f"print(open({path!r}).read().strip())"])
    try:
        container.start()
        if container.wait(timeout=60).get("StatusCode") != 0:
            return None
        return container.logs(stdout=True, stderr=False).decode().strip() or None
    finally:
        container.remove(force=True)


def _cached_cap(cache: Path, key: str) -> dict | None:
    """The cache's entry if it is this engine's and holds a plausible cap, else None."""
    try:
        entry = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None  # another engine's, or written before the key was kept in it
    cap = entry.get("engine_nofile_cap")
    if not isinstance(cap, int) or isinstance(cap, bool) or not 1024 <= cap <= NOFILE_MAX:
        return None
    return entry


def conntrack_max(client, image: str | None, local: bool) -> int | None:
    """nf_conntrack_max now: the host's /proc when the engine is on this machine (one global
    value, which every namespace shows), else as a container reads it."""
    if local:
        from tcplimits.engine.footprint import read_sysctl

        value = read_sysctl(CONNTRACK_MAX)
        return value if isinstance(value, int) else None
    text = _read_in_container(client, image, f"/proc/sys/{proc_sys(CONNTRACK_MAX)}")
    return int(text) if text and text.isdigit() else None


def probe_engine(client, *, image: str | None = None, refresh: bool = False,
                 log: Log = stderr_log, local: bool | None = None) -> dict[str, Any]:
    """Engine facts every run records, read now; the nofile cap from the cache (``refresh``,
    `tcplimits probe --refresh`, measures it again). ``local``: the engine runs on this
    machine (default: judged from the client's address)."""
    from tcplimits.engine.host import engine_is_local

    info = client.info()
    version = client.version()
    key = f"{info.get('ID', '')}-{version.get('Version')}-{info.get('KernelVersion')}"
    # Not the engine-*.json of earlier versions (all facts): their readers would take this.
    cache = _cache_dir() / f"nofile-cap-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
    local = engine_is_local(client.api.base_url) if local is None else local
    entry = None if refresh else _cached_cap(cache, key)
    if image is None and (entry is None or not local):
        from tcplimits.image import ensure_image

        image = ensure_image(client, log=log).id
    if entry is None:
        log("measuring the engine's nofile cap (once per engine; cached)...")
        try:
            cap = measure_nofile_cap(client, image)
        except BaseException:  # SIGTERM or SIGHUP raised mid-create: the engine may hold one
            _remove_own_probes(client)
            raise
        entry = {"key": key, "engine_nofile_cap": cap, "measured_at": now()}
        results.write_json(entry, cache)
    return {
        "kernel": info.get("KernelVersion"),
        "docker_version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup_version": info.get("CgroupVersion"),
        "engine_id": info.get("ID"),
        "engine_nofile_cap": entry["engine_nofile_cap"],
        "nofile_cap_measured_at": entry.get("measured_at"),
        "nf_conntrack_max": conntrack_max(client, image, local),
        "read_at": now(),
    }
