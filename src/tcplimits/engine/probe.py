"""Engine facts every run records: versions, kernel, conntrack room, and the highest nofile
the engine gives a container (measured once per engine by bisection, then cached)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import Ulimit

from tcplimits import LABEL, OWNER_LABEL, ROLE_LABEL, results
from tcplimits.config.params import NOFILE_MAX
from tcplimits.engine.cleanup import owner
from tcplimits.engine.events import Log, stderr_log
from tcplimits.engine.plan import hardening
from tcplimits.engine.record import now
from tcplimits.model.hostlimits import CONNTRACK_MAX, proc_sys


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tcplimits"


def _probe_container(client, image: str, nofile: int | None, command: list[str]):
    kwargs = dict(hardening(), network_disabled=True,
                  labels={LABEL: "1", ROLE_LABEL: "probe", OWNER_LABEL: owner()})
    if nofile is not None:
        kwargs["ulimits"] = [Ulimit(name="nofile", soft=nofile, hard=nofile)]
    return client.containers.create(image, command, **kwargs)


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


def probe_engine(client, *, image: str | None = None, refresh: bool = False,
                 log: Log = stderr_log) -> dict[str, Any]:
    """Engine facts every run records. The nofile cap takes ~20 container starts to measure,
    so it is cached per engine (id, version, kernel); `tcplimits probe --refresh` redoes it."""
    info = client.info()
    version = client.version()
    key = f"{info.get('ID', '')}-{version.get('Version')}-{info.get('KernelVersion')}"
    cache = _cache_dir() / f"engine-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
    if cache.exists() and not refresh:
        return json.loads(cache.read_text())
    if image is None:
        from tcplimits.image import ensure_image

        image = ensure_image(client, log=log).id
    log("measuring the engine's nofile cap (once per engine; cached)...")
    conntrack = _read_in_container(client, image, f"/proc/sys/{proc_sys(CONNTRACK_MAX)}")
    facts = {
        "kernel": info.get("KernelVersion"),
        "docker_version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup_version": info.get("CgroupVersion"),
        "engine_id": info.get("ID"),
        "engine_nofile_cap": measure_nofile_cap(client, image),
        "nf_conntrack_max": int(conntrack) if conntrack and conntrack.isdigit() else None,
        "measured_at": now(),
    }
    results.write_json(facts, cache)
    return facts
