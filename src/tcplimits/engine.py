"""Run one experiment on the Docker engine: a server container and client containers on a
fresh internal bridge network, clients connecting until their first failure.

The plan (container specs, compose file) is pure and built from the parameters; the
``Experiment`` object owns every resource it creates and removes them all, whatever happens
(success, error, timeout, SIGINT, SIGTERM). Leftovers of a run that died anyway (SIGKILL)
are swept by the next run: every resource carries its owner's host and pid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import docker
import docker.errors
from docker.types import Ulimit

from . import LABEL, RUN_LABEL, __version__, addresses, fourtuple, model, results
from .params import FIELDS, NOFILE_MAX, RunParams

SERVER_PORT = 5000
AGENTS = "/opt/tcplimits/agents"
USER = "65534:65534"  # nobody: the agents need no privilege at all
OWNER_LABEL = "tcplimits.owner"  # "<host>:<pid>" of the process that created the resource
# One execution of a run: run ids repeat (the workflow's point ids), names must not.
INSTANCE_LABEL = "tcplimits.instance"
SERVER_READY_TIMEOUT_S = 60
SETTLE_S = 1.0  # the server's count is final once unchanged this long
STOP_TIMEOUT_S = 30
SAMPLES_PER_PROCESS = 200  # progress samples: one per 0.5% of the expected count

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- plan (pure)


@dataclass(frozen=True)
class Resolved:
    """What defaults and "auto" became for one run: recorded, never hidden."""

    server_nofile: int
    server_workers: int
    sample_every: int

    @classmethod
    def of(cls, params: RunParams, engine_nofile_cap: int) -> "Resolved":
        server_nofile = params.server_nofile or engine_nofile_cap
        if params.server_workers == "auto":
            workers = model.auto_server_workers(params, server_nofile)
        else:
            workers = int(params.server_workers)
        per_proc = model.client_terms(params)[0] / params.procs
        return cls(server_nofile, workers, max(1, int(per_proc // SAMPLES_PER_PROCESS)))


def new_run_id(params: RunParams, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    digest = hashlib.sha1(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()
    return f"{now:%Y%m%dT%H%M%SZ}-{digest[:6]}"


def memory_limit(connections: int, procs: int) -> int:
    """Bytes: a Python interpreter per process plus ~8 KiB per socket (4.4 KB measured for an
    idle socket's kernel memory, with room for the process's own bookkeeping)."""
    return (64 + 32 * procs) * 2**20 + connections * 8 * 2**10


def container_specs(params: RunParams, resolved: Resolved, run_id: str, image: str,
                    network: str, labels: dict[str, str],
                    instance: str = "") -> dict[str, dict[str, Any]]:
    """Docker SDK ``containers.create`` arguments for the server and each client, by role
    ("server", "client1", ...). The clients' ``--server`` is filled in once the server has
    an address; ``--wait-signal`` lets the engine start all clients at the same moment."""
    hardened = dict(
        cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True, user=USER,
        network=network, detach=True,
    )
    per_client = model.client_terms(params)[0]
    prefix = f"tcplimits-{run_id}" + (f"-{instance}" if instance else "")
    specs = {
        "server": dict(
            hardened,
            image=image,
            name=f"{prefix}-server",
            hostname="server",
            command=["python3", f"{AGENTS}/server.py", "--port", _server_ports(params),
                     "--workers", str(resolved.server_workers), "--backlog", str(params.backlog)],
            ulimits=[Ulimit(name="nofile", soft=resolved.server_nofile,
                            hard=resolved.server_nofile)],
            pids_limit=resolved.server_workers + 8,
            mem_limit=memory_limit(per_client * params.clients, resolved.server_workers),
            labels={**labels, "tcplimits.role": "server"},
        )
    }
    for i in range(1, params.clients + 1):
        command = ["python3", f"{AGENTS}/client.py", "--server", "server",
                   "--port", _server_ports(params), "--client", str(i), "--procs", str(params.procs),
                   "--connect-timeout", str(params.connect_timeout),
                   "--sample-every", str(resolved.sample_every), "--wait-signal"]
        if params.max_connections:
            command += ["--max-connections", str(params.max_connections)]
        if params.bind_mode != FIELDS["bind_mode"].default:
            command += ["--bind-mode", params.bind_mode]
        specs[f"client{i}"] = dict(
            hardened,
            image=image,
            name=f"{prefix}-client{i}",
            hostname=f"client{i}",
            command=command,
            sysctls={"net.ipv4.ip_local_port_range": f"{params.port_lo} {params.port_hi}"},
            ulimits=[Ulimit(name="nofile", soft=params.nofile, hard=params.nofile)],
            pids_limit=params.procs + 8,
            mem_limit=memory_limit(per_client, params.procs),
            labels={**labels, "tcplimits.role": "client", "tcplimits.client": str(i)},
        )
    return specs


def _server_ports(params: RunParams) -> str:
    return ",".join(map(str, fourtuple.server_ports(params.server_ports, SERVER_PORT)))


def compose_file(specs: dict[str, dict[str, Any]], run_id: str) -> str:
    """A docker-compose file that reproduces the run by hand, as the seed did. Clients start
    when the server's health check sees it listening, instead of on the engine's signal."""
    import yaml

    services = {}
    for role, spec in specs.items():
        command = [c for c in spec["command"] if c != "--wait-signal"]
        service = {
            "image": spec["image"],
            "command": command,
            "hostname": spec["hostname"],
            "user": spec["user"],
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "ulimits": {u["Name"]: {"soft": u["Soft"], "hard": u["Hard"]}
                        for u in spec["ulimits"]},
            "pids_limit": spec["pids_limit"],
            "mem_limit": spec["mem_limit"],
            "labels": {k: v for k, v in spec["labels"].items()
                       if k not in (OWNER_LABEL, INSTANCE_LABEL)},
            "networks": ["testnet"],
        }
        if "sysctls" in spec:
            service["sysctls"] = spec["sysctls"]
        if role == "server":
            service["healthcheck"] = {
                "test": ["CMD", "python3", f"{AGENTS}/server.py", "--check",
                         "--port", str(SERVER_PORT)],
                "interval": "1s", "retries": 30,
            }
        else:
            service["depends_on"] = {"server": {"condition": "service_healthy"}}
        services[role] = service
    doc = {
        "name": f"tcplimits-{run_id}".lower(),
        "services": services,
        "networks": {"testnet": {"internal": True, "labels": {LABEL: "1", RUN_LABEL: run_id}}},
    }
    header = (f"# Reproduces tcplimits run {run_id} by hand:\n"
              "#   tcplimits image            # builds the image named below if missing\n"
              "#   docker compose -f compose.yml up   (Ctrl-C, then: docker compose down)\n"
              "# Each client prints JSON lines; its 'result' line says how many connections\n"
              "# it held and the errno that stopped it.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


# --------------------------------------------------------------------------- engine facts


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tcplimits"


def _hardened_probe(client, image: str, nofile: int | None, command: list[str]):
    kwargs = dict(cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                  user=USER, network_disabled=True, labels={LABEL: "1", "tcplimits.role": "probe",
                                                            OWNER_LABEL: _owner()})
    if nofile is not None:
        kwargs["ulimits"] = [Ulimit(name="nofile", soft=nofile, hard=nofile)]
    return client.containers.create(image, command, **kwargs)


def _nofile_allowed(client, image: str, nofile: int) -> bool:
    """Can a container start with this nofile? An engine that may not raise its own limit
    (rootless, some sandboxes) fails the start: "error setting rlimit type 7"."""
    container = _hardened_probe(client, image, nofile, ["python3", "-c", "pass"])
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
    container = _hardened_probe(client, image, None, ["python3", "-c",
                                                      f"print(open({path!r}).read().strip())"])
    try:
        container.start()
        if container.wait(timeout=60).get("StatusCode") != 0:
            return None
        return container.logs(stdout=True, stderr=False).decode().strip() or None
    finally:
        container.remove(force=True)


def probe_engine(client, *, image: str | None = None, refresh: bool = False,
                 log: Log = _stderr) -> dict[str, Any]:
    """Engine facts every run records. The nofile cap takes ~20 container starts to measure,
    so it is cached per engine (id, version, kernel); `tcplimits probe --refresh` redoes it."""
    info = client.info()
    version = client.version()
    key = f"{info.get('ID', '')}-{version.get('Version')}-{info.get('KernelVersion')}"
    cache = _cache_dir() / f"engine-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
    if cache.exists() and not refresh:
        return json.loads(cache.read_text())
    if image is None:
        from .image import ensure_image

        image = ensure_image(client, log=log).id
    log("measuring the engine's nofile cap (once per engine; cached)...")
    conntrack = _read_in_container(client, image, "/proc/sys/net/netfilter/nf_conntrack_max")
    facts = {
        "kernel": info.get("KernelVersion"),
        "docker_version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup_version": info.get("CgroupVersion"),
        "engine_id": info.get("ID"),
        "engine_nofile_cap": measure_nofile_cap(client, image),
        "nf_conntrack_max": int(conntrack) if conntrack and conntrack.isdigit() else None,
        "measured_at": _now(),
    }
    results.write_json(facts, cache)
    return facts


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- cleanup


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Is the process that created a resource still running? Resources without an owner, or
    owned from another host, are not ours to judge: they count as alive."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(client, *, everything: bool = False, instance: str | None = None) -> dict[str, int]:
    """Remove containers, then networks, labelled tcplimits=1 whose owning process is gone
    (or all of them, or those of one run instance). Best effort: a resource another process
    is removing at the same moment is left to it."""
    filters = {"label": [f"{LABEL}=1"] + ([f"{INSTANCE_LABEL}={instance}"] if instance else [])}
    removed = {"containers": 0, "networks": 0}
    # sparse: no inspect per container, which would race with containers being removed.
    for kind, listing in (("containers", lambda: client.containers.list(all=True, sparse=True,
                                                                        filters=filters)),
                          ("networks", lambda: client.networks.list(filters=filters))):
        for resource in listing():
            labels = resource.attrs.get("Labels") or resource.attrs.get("Config", {}).get("Labels") or {}
            if not (everything or instance or not _owner_alive(labels.get(OWNER_LABEL))):
                continue
            try:
                resource.remove(force=True) if kind == "containers" else resource.remove()
                removed[kind] += 1
            except docker.errors.APIError:  # gone already, or being removed (409)
                pass
    return removed


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that cleanup runs as for Ctrl-C."""


@contextmanager
def _signals_raise():
    """SIGTERM raises Interrupted, as SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        for s in previous:
            signal.signal(s, previous[s])


@contextmanager
def _shielded():
    """Record SIGINT/SIGTERM while cleaning up and raise afterwards, so a second Ctrl-C cannot
    leave containers behind. (Masking would not do: the kernel hands the signal to another
    thread, and Python still runs its handler in this one.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise (KeyboardInterrupt() if received[0] == signal.SIGINT
                   else Interrupted(signal.Signals(received[0]).name))


# --------------------------------------------------------------------------- the run


class _LogReader(threading.Thread):
    """Follows one container's output: keeps the text, queues each JSON event."""

    def __init__(self, container, role: str, events: queue.Queue):
        super().__init__(daemon=True, name=f"logs-{role}")
        self.container, self.role, self.events = container, role, events
        self.lines: list[str] = []

    def run(self) -> None:
        buffer = b""
        try:
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._line(raw.decode(errors="replace"))
        except Exception as err:  # the container was removed under us: end quietly
            self.lines.append(f"[tcplimits: log stream ended: {err}]")
        if buffer:
            self._line(buffer.decode(errors="replace"))
        self.events.put((self.role, {"event": "_closed"}))

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("{"):
            try:
                self.events.put((self.role, json.loads(line)))
            except json.JSONDecodeError:
                pass


class RunFailed(Exception):
    pass


@dataclass
class _State:
    """What the engine has heard from the agents so far."""

    ready: dict[int, dict] = field(default_factory=dict)        # client -> ready event
    progress: dict[tuple[int, int], int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    results: dict[tuple[int, int], dict] = field(default_factory=dict)
    pairs: dict[tuple[int, int], list] = field(default_factory=dict)  # (client, proc) -> pairs
    server_listening: dict | None = None
    server_progress: dict[int, int] = field(default_factory=dict)
    server_results: dict[int, dict] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    died: list[str] = field(default_factory=list)

    def take(self, role: str, event: dict) -> None:
        kind = event.get("event")
        if kind == "_closed":
            self.closed.add(role)
        elif role == "server":
            if kind == "listening":
                self.server_listening = event
            elif kind == "progress":
                self.server_progress[event["worker"]] = event["accepted"]
            elif kind == "result":
                self.server_results[event["worker"]] = event
                self.server_progress[event["worker"]] = event["accepted"]
        elif kind == "ready":
            self.ready[event["client"]] = event
        elif kind == "progress":
            self.progress[(event["client"], event["proc"])] = event["connections"]
            self.samples.append(event)
        elif kind == "result":
            self.results[(event["client"], event["proc"])] = event
            self.progress[(event["client"], event["proc"])] = event["connections"]
        elif kind == "pairs":
            self.pairs.setdefault((event["client"], event["proc"]), []).extend(event["pairs"])
        elif kind == "worker_exit":  # a client process died (out of memory, a crash)
            self.died.append(f"{role} process pid {event['pid']} exited with code "
                             f"{event['code']} before reporting")

    @property
    def connections(self) -> int:
        return sum(self.progress.values())

    @property
    def accepted(self) -> int:
        return sum(self.server_progress.values())


class Experiment:
    """One run's resources and timeline. Use as a context manager: leaving it removes every
    container and the network, whatever happened inside."""

    def __init__(self, client, params: RunParams, resolved: Resolved, run_id: str, image: str,
                 log: Log = _stderr, live: bool = True):
        self.client, self.params, self.resolved = client, params, resolved
        self.run_id, self.image, self.log, self.live = run_id, image, log, live
        self.instance = uuid.uuid4().hex[:8]
        self.labels = {LABEL: "1", RUN_LABEL: run_id, OWNER_LABEL: _owner(),
                       INSTANCE_LABEL: self.instance}
        self.network_name = f"tcplimits-{run_id}-{self.instance}"
        self.specs = container_specs(params, resolved, run_id, image, self.network_name,
                                     self.labels, self.instance)
        self.events: queue.Queue = queue.Queue()
        self.state = _State()
        self.containers: dict[str, Any] = {}
        self.readers: dict[str, _LogReader] = {}
        self.network = None
        self.deadline = time.monotonic() + params.timeout
        self.timeline: dict[str, float] = {}
        self.address_plan: addresses.AddressPlan | None = None
        self.addresses: dict[str, list[str]] = {}  # role -> every IPv4 address it had
        self.helpers: list[dict] = []               # run.json "privileges": helpers
        self.network_ipam: list[dict] | None = None  # the network's subnet(s), as created

    def __enter__(self) -> "Experiment":
        return self

    def __exit__(self, *exc) -> None:
        t0 = time.monotonic()
        with _shielded():
            self._remove_all()
        self.timeline["teardown_s"] = time.monotonic() - t0

    # -- steps

    def run(self) -> None:
        t0 = time.monotonic()
        if addresses.needs_extra(self.params):
            self.network, self.address_plan = addresses.create_network(
                self.client, self.network_name, self.params, self.labels)
        else:
            self.network = self.client.networks.create(
                self.network_name, driver="bridge", internal=True, labels=self.labels,
                check_duplicate=True)
        self.network.reload()
        self.network_ipam = [{"subnet": c.get("Subnet"), "ip_range": c.get("IPRange") or None,
                              "gateway": c.get("Gateway")}
                             for c in (self.network.attrs.get("IPAM") or {}).get("Config") or []]
        self._start("server")
        self._wait(lambda: self.state.server_listening is not None, "the server to listen",
                   limit=SERVER_READY_TIMEOUT_S, watch=["server"])
        server_addrs = self._add_addresses("server")
        roles = [r for r in self.specs if r != "server"]
        for role in roles:
            spec = dict(self.specs[role], command=list(self.specs[role]["command"]))
            spec["command"][spec["command"].index("--server") + 1] = ",".join(server_addrs)
            extra = self.address_plan.extra.get(role) if self.address_plan else None
            if extra and self.params.bind_mode != fourtuple.CONNECT:
                spec["command"] += ["--sources", ",".join(extra)]
            self.containers[role] = self.client.containers.create(**spec)
        for role in roles:
            self.containers[role].start()
            self._follow(role)
        self._wait(lambda: len(self.state.ready) == self.params.clients, "the clients to start",
                   limit=SERVER_READY_TIMEOUT_S, watch=roles)
        for role in roles:  # before the start signal: no client binds before they exist
            self._add_addresses(role)
        self.timeline["setup_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        for role in roles:  # all clients start connecting together
            self.containers[role].kill(signal="SIGUSR1")
        expected_results = self.params.clients * self.params.procs
        self._wait(lambda: len(self.state.results) == expected_results,
                   "every client process to stop", watch=roles, progress=True)
        self.timeline["connect_s"] = time.monotonic() - t1
        self._settle_server()
        self.containers["server"].kill(signal="SIGTERM")
        self._wait(lambda: len(self.state.server_results) == self.resolved.server_workers,
                   "the server's final counts", limit=STOP_TIMEOUT_S, watch=[])

    def _add_addresses(self, role: str) -> list[str]:
        """Every address of ``role`` after adding its extra ones (primary first), through a
        NET_ADMIN helper in its namespace; the agent itself keeps no capability."""
        primary = self._address(role)
        extra = self.address_plan.extra.get(role, []) if self.address_plan else []
        if extra:
            container = self.containers[role]
            self.helpers.append(addresses.add_addresses(
                self.client, self.image, container, extra, self.address_plan.prefix,
                self.labels, name=f"{container.name}-netadmin"))
            missing = set(extra) - set(self.helpers[-1]["addresses_after"])
            if missing:
                raise RunFailed(f"{role}: addresses {sorted(missing)} missing after the helper ran")
        self.addresses[role] = [primary, *extra]
        return self.addresses[role]

    def _start(self, role: str) -> None:
        self.containers[role] = self.client.containers.create(**self.specs[role])
        self.containers[role].start()
        self._follow(role)

    def _follow(self, role: str) -> None:
        reader = _LogReader(self.containers[role], role, self.events)
        reader.start()
        self.readers[role] = reader

    def _address(self, role: str) -> str:
        self.containers[role].reload()
        networks = self.containers[role].attrs["NetworkSettings"]["Networks"]
        return networks[self.network_name]["IPAddress"]

    def _settle_server(self) -> None:
        """The server accepts what the clients connected, a little later: wait until its count
        reaches the clients' total or stops changing."""
        target = self.state.connections
        last, since = -1, time.monotonic()
        end = min(self.deadline, time.monotonic() + 30)
        while time.monotonic() < end:
            self._drain(0.2)
            accepted = self.state.accepted
            if accepted >= target:
                return
            if accepted != last:
                last, since = accepted, time.monotonic()
            elif time.monotonic() - since >= SETTLE_S:
                return

    def _drain(self, timeout: float) -> None:
        try:
            role, event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self.state.take(role, event)
        while True:
            try:
                role, event = self.events.get_nowait()
            except queue.Empty:
                return
            self.state.take(role, event)

    def _wait(self, done: Callable[[], bool], what: str, *, limit: float | None = None,
              watch: list[str], progress: bool = False) -> None:
        started = time.monotonic()
        end = self.deadline if limit is None else min(self.deadline, started + limit)
        last_print = 0.0
        tty = sys.stderr.isatty()
        while not done():
            now = time.monotonic()
            if now >= end:
                reason = "run timeout" if end == self.deadline else "time limit"
                raise RunFailed(f"{reason}: gave up waiting for {what} after "
                                f"{now - started:.0f} s")
            if self.state.died:
                raise RunFailed("; ".join(self.state.died))
            for role in watch:
                if role in self.state.closed:
                    raise RunFailed(f"{role} exited before {what}: {self._exit_reason(role)}")
            self._drain(0.2)
            if progress and self.live and now - last_print >= (0.5 if tty else 5.0):
                last_print = now
                self._print_live(tty)
        if progress and self.live and tty:
            self._print_live(tty)
            print(file=sys.stderr)

    def _print_live(self, tty: bool) -> None:
        per_client: dict[int, int] = {}
        for (c, _), n in self.state.progress.items():
            per_client[c] = per_client.get(c, 0) + n
        done = len(self.state.results)
        parts = " ".join(f"c{c}={n:,}" for c, n in sorted(per_client.items()))
        line = (f"connections {self.state.connections:,} ({parts}); server accepted "
                f"{self.state.accepted:,}; processes stopped {done}/"
                f"{self.params.clients * self.params.procs}")
        print(("\r" + line + "\033[K") if tty else line, end="" if tty else "\n",
              file=sys.stderr, flush=True)

    def _exit_reason(self, role: str) -> str:
        container = self.containers[role]
        try:
            container.reload()
            st = container.attrs["State"]
            tail = "; ".join(self.readers[role].lines[-3:]) if role in self.readers else ""
            return (f"exit code {st.get('ExitCode')}, OOMKilled={st.get('OOMKilled')}"
                    + (f", last output: {tail}" if tail else ""))
        except docker.errors.APIError as err:
            return str(err)

    def save_logs(self, out_dir: Path) -> None:
        for role, reader in self.readers.items():
            reader.join(timeout=2)
            results.write_text("\n".join(reader.lines) + "\n",
                               out_dir / results.LOGS_DIR / f"{role}.log")

    def _remove_all(self) -> None:
        # Clients first: the server must outlive them so the network empties cleanly.
        for role in sorted(self.containers, key=lambda r: r == "server"):
            try:
                self.containers[role].remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as err:
                self.log(f"warning: could not remove {role}: {err}")
        for reader in self.readers.values():
            reader.join(timeout=5)
        if self.network is not None:
            for attempt in range(3):  # endpoints of just-removed containers linger a moment
                try:
                    self.network.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as err:
                    if attempt == 2:
                        self.log(f"warning: could not remove the network: {err}")
                    time.sleep(1)
        # Anything of this run that escaped the bookkeeping above.
        sweep(self.client, instance=self.instance)


def held_other_addr(held: list[dict], own: list[str]) -> int:
    """Held ports bound to a specific address the client never leaves from (Docker's DNS on
    127.0.0.11): bind((source, 0)) may still take them (see fourtuple.held_cost)."""
    return len({s["port"] for s in held
                if s.get("addr") not in fourtuple.WILDCARDS and s.get("addr") not in own})


def _client_rows(state: _State, params: RunParams, run_id: str,
                 addresses: dict[int, str], own: dict[int, list[str]]) -> list[dict]:
    rows = []
    for client in range(1, params.clients + 1):
        sockets = state.ready.get(client, {}).get("held", [])
        held = len(sockets)
        other = held_other_addr(sockets, own.get(client, [addresses.get(client)]))
        for proc in range(1, params.procs + 1):
            result = state.results.get((client, proc))
            row = dict(run_id=run_id, client=client, proc=proc, client_ip=addresses.get(client),
                       held_ports=held, held_other_addr=other)
            if result:
                row.update({k: result.get(k) for k in
                            ("connections", "errno", "error", "message", "elapsed_s")})
            else:
                row.update(connections=state.progress.get((client, proc), 0), error="NO_RESULT",
                           message="the process had not stopped when the run ended")
            rows.append(row)
    return rows


def _destination_rows(state: _State, run_id: str) -> list[dict]:
    """One row per (client, process, source, server address, server port)."""
    return [dict(run_id=run_id, client=client, proc=proc, source=src, server_addr=addr,
                 server_port=port, connections=n, error=error)
            for (client, proc), pairs in sorted(state.pairs.items())
            for src, addr, port, n, error in pairs]


def explain(params: RunParams, prediction: model.Prediction, clients: list[dict],
            server: list[dict], held: dict[int, list[dict]], backlog_queue: int) -> list[str]:
    """Sentences that explain the outcome, for run.json's notes and the report."""
    notes = []
    for client, sockets in held.items():
        for s in sockets:
            who = ("Docker's embedded DNS resolver, which listens on 127.0.0.11 in every "
                   "container on a user-defined network"
                   if s["addr"] == "127.0.0.11" else f"a socket on {s['addr']}")
            notes.append(
                f"client {client}: port {s['port']} of the range {params.port_range} was already "
                f"held ({s['state']}) in the container's namespace by {who}; connect() never "
                "takes a port held by bind(), so the pool is one port smaller.")
    per_client: dict[int, int] = {}
    for row in clients:
        per_client[row["client"]] = per_client.get(row["client"], 0) + (row["connections"] or 0)
    for client, observed in sorted(per_client.items()):
        predicted = prediction.per_client[client - 1]
        errors = sorted({r["error"] for r in clients if r["client"] == client and r["error"]})
        verdict = "as predicted" if observed == predicted else f"predicted {predicted:,}"
        notes.append(f"client {client}: {observed:,} connections ({verdict}; limit: "
                     f"{prediction.limit}), stopped by {', '.join(errors) or 'nothing'}.")
        emfile = [r["proc"] for r in clients if r["client"] == client and r["error"] == "EMFILE"]
        if emfile and prediction.limit == model.PORTS:
            notes.append(
                f"client {client}: process(es) {', '.join(map(str, emfile))} reached their own "
                f"descriptor limit (nofile - {model.CLIENT_BASELINE_FDS} = "
                f"{params.nofile - model.CLIENT_BASELINE_FDS:,}) first; the other processes took "
                "the rest of the shared port pool, which is what bound the container.")
    if prediction.limit == model.DESCRIPTORS:
        notes.append(f"each client process holds nofile - {model.CLIENT_BASELINE_FDS} = "
                     f"{params.nofile - model.CLIENT_BASELINE_FDS:,} sockets: descriptors 0-2 "
                     "(stdin, stdout, stderr) are already open.")
    total = sum(per_client.values())
    accepted = sum(r.get("accepted") or 0 for r in server)
    if server and accepted != total:
        notes.append(
            f"the clients counted {total:,} connections and the server accepted {accepted:,}: "
            f"the kernel completes the handshake before accept(), so up to {backlog_queue} "
            "(backlog + 1) more wait in the accept queue.")
    failing = [r for r in server if r.get("error")]
    if failing:
        errors = ", ".join(sorted({r["error"] for r in failing}))
        workers = ", ".join(str(r["worker"]) for r in failing)
        if accepted >= total:
            notes.append(f"server worker(s) {workers} hit {errors} in accept() at their "
                         "descriptor limit; the other workers accepted the rest, so the server "
                         "did not limit the run.")
        else:
            notes.append(f"the server's accept() failed with {errors} in worker(s) {workers} "
                         "once out of descriptors; the server kept running, clients saw their "
                         "SYNs dropped once the accept queue was full.")
    return notes


def _environment(facts: dict, image) -> dict[str, Any]:
    return {
        "kernel": facts.get("kernel"),
        "docker_version": facts.get("docker_version"),
        "storage_driver": facts.get("storage_driver"),
        "cgroup_version": facts.get("cgroup_version"),
        "engine_nofile_cap": facts.get("engine_nofile_cap"),
        "nf_conntrack_max": facts.get("nf_conntrack_max"),
        "image_id": getattr(image, "id", None),
        "image_tag": (image.tags[0] if getattr(image, "tags", None) else None),
        "tcplimits_version": __version__,
        "git_sha": _git_sha(),
    }


def unsupported_reason(params: RunParams, cap: int, resolved: Resolved | None = None) -> str | None:
    """Why the engine cannot run these parameters as asked (never silently lowered)."""
    most_workers = int(FIELDS["server_workers"].maximum)
    if resolved is not None and resolved.server_workers > most_workers:
        return (f"server_workers auto needs {resolved.server_workers} workers of nofile "
                f"{resolved.server_nofile} to accept every connection, more than {most_workers}; "
                "raise --server-nofile or set --server-workers")
    if params.nofile > cap:
        need = math.ceil(params.nofile * params.procs / cap)
        return (f"engine allows nofile up to {cap}; asked {params.nofile}; use more --procs "
                f"(e.g. --procs {need} --nofile {params.nofile * params.procs // need} keeps "
                "the descriptor budget)")
    if params.server_nofile is not None and params.server_nofile > cap:
        return (f"engine allows nofile up to {cap}; asked --server-nofile "
                f"{params.server_nofile}; use more --server-workers")
    return None


def run_experiment(params: RunParams, out_dir: Path, *, run_id: str | None = None,
                   progress: bool = True, client=None, log: Log = _stderr) -> dict[str, Any]:
    """Run one experiment and write its run directory; returns the run.json record.
    ``progress`` shows a live count on stderr while clients connect."""
    from .image import ensure_image

    client = client or docker.from_env()
    run_id = run_id or new_run_id(params)
    out_dir = Path(out_dir)
    started = _now()
    t0 = time.monotonic()
    image = ensure_image(client, log=log)
    facts = probe_engine(client, image=image.id, log=log)
    record: dict[str, Any] = {
        "run_id": run_id, "status": None, "reason": None, "params": params.to_dict(),
        "resolved": None, "prediction": None, "started_at": started, "ended_at": None,
        "duration_s": None, "setup_s": None, "connect_s": None, "teardown_s": None,
        "environment": _environment(facts, image), "totals": None, "held_ports": None,
        "notes": [],
    }
    cap = facts["engine_nofile_cap"]
    resolved = Resolved.of(params, cap)
    record["resolved"] = asdict(resolved)
    reason = unsupported_reason(params, cap, resolved)
    if reason:
        record.update(status=results.STATUS_UNSUPPORTED, reason=reason, ended_at=_now(),
                      duration_s=round(time.monotonic() - t0, 3))
        _write_run(out_dir, record, [], [], [], compose=None)
        return record
    removed = sweep(client)
    if any(removed.values()):
        log(f"removed leftovers of earlier runs: {removed['containers']} container(s), "
            f"{removed['networks']} network(s)")
    log(f"run {run_id}: {params.clients} client(s) x {params.procs} process(es), port range "
        f"{params.port_range} ({params.port_count:,} ports), nofile {params.nofile:,}; server "
        f"{resolved.server_workers} worker(s) x nofile {resolved.server_nofile:,}")
    interrupted: BaseException | None = None
    experiment = Experiment(client, params, resolved, run_id, image.tags[0], log=log,
                            live=progress)
    addresses: dict[int, str] = {}
    try:
        with _signals_raise(), experiment:
            try:
                experiment.run()
                status, reason = results.STATUS_OK, None
            except RunFailed as err:
                status, reason = results.STATUS_FAILED, str(err)
            except docker.errors.APIError as err:
                status, reason = results.STATUS_FAILED, f"Docker engine error: {err}"
            finally:
                for role, c in experiment.containers.items():
                    if role.startswith("client"):
                        try:
                            addresses[int(role[6:])] = experiment._address(role)
                        except docker.errors.APIError:
                            pass
                experiment._drain(0.05)
    except (KeyboardInterrupt, Interrupted) as err:
        interrupted = err
        status, reason = results.STATUS_FAILED, f"interrupted ({type(err).__name__} {err})".strip()
    state = experiment.state
    experiment.save_logs(out_dir)
    record.update({k: round(v, 3) for k, v in experiment.timeline.items()})
    held = {c: state.ready[c].get("held", []) for c in sorted(state.ready)}
    listening = state.server_listening or {}
    somaxconn = listening.get("somaxconn", model.SOMAXCONN)
    prediction = model.predict(
        params, server_nofile=resolved.server_nofile, server_workers=resolved.server_workers,
        held_ports=[held.get(c, []) for c in range(1, params.clients + 1)],
        conntrack_max=facts.get("nf_conntrack_max"), somaxconn=somaxconn)
    own = {int(role[6:]): addrs for role, addrs in experiment.addresses.items()
           if role.startswith("client")}
    clients = _client_rows(state, params, run_id, addresses, own)
    destinations = _destination_rows(state, run_id)
    server = [dict(run_id=run_id, **{k: r.get(k) for k in
                                     ("worker", "accepted", "errno", "error", "message",
                                      "accept_errors")})
              for _, r in sorted(state.server_results.items())]
    series = [dict(run_id=run_id, **{k: s[k] for k in
                                     ("client", "proc", "connections", "t_s", "connect_latency_s")})
              for s in state.samples]
    record.update(
        status=status, reason=reason, prediction=prediction.to_dict(),
        held_ports={str(c): [s["port"] for s in v] for c, v in held.items()},
        totals={"connections": sum(r["connections"] or 0 for r in clients),
                "server_accepted": sum(r["accepted"] or 0 for r in server) if server else None},
        notes=explain(params, prediction, clients, server, held,
                      model.accept_queue(params.backlog, somaxconn)) if status == "ok" else [],
        ended_at=_now(), duration_s=round(time.monotonic() - t0, 3),
        **_tuple_record(experiment, state),
    )
    _write_run(out_dir, record, clients, server, series,
               compose=compose_file(experiment.specs, run_id), destinations=destinations)
    if interrupted is not None:
        raise KeyboardInterrupt from interrupted
    return record


def _tuple_record(experiment: "Experiment", state: _State) -> dict[str, Any]:
    """run.json's "addresses" (every address each container had, the network's subnet and
    Docker's allocation range) and "privileges" (what the agents held; which helper used
    which capability, on which container)."""
    agents = {role: {"cap_drop": spec.get("cap_drop"), "cap_add": spec.get("cap_add"),
                     "user": spec.get("user")} for role, spec in experiment.specs.items()}
    for client, ready in state.ready.items():
        agents[f"client{client}"]["capabilities"] = ready.get("capabilities")
    if state.server_listening:
        agents["server"]["capabilities"] = state.server_listening.get("capabilities")
    return {
        "addresses": {"network": experiment.network_ipam,
                      "plan": experiment.address_plan.to_dict() if experiment.address_plan
                      else None,
                      "containers": experiment.addresses},
        "privileges": {"agents": agents, "helpers": experiment.helpers},
    }


def _write_run(out_dir: Path, record: dict, clients: list[dict], server: list[dict],
               series: list[dict], compose: str | None,
               destinations: list[dict] | None = None) -> None:
    results.write_parquet(results.frame(clients, results.CLIENTS_SCHEMA),
                          out_dir / results.CLIENTS_FILE)
    results.write_parquet(results.frame(server, results.SERVER_SCHEMA),
                          out_dir / results.SERVER_FILE)
    results.write_parquet(results.frame(series, results.SERIES_SCHEMA),
                          out_dir / results.SERIES_FILE)
    results.write_parquet(results.frame(destinations or [], results.DESTINATIONS_SCHEMA),
                          out_dir / results.DESTINATIONS_FILE)
    if compose:
        results.write_text(compose, out_dir / results.COMPOSE_FILE)
    # run.json last: its presence means the run directory is complete.
    results.write_json(record, out_dir / results.RUN_JSON)


def summary(run_dir: Path) -> str:
    """The table printed at the end of a run, from its run directory."""
    record = results.read_run(run_dir)
    clients = results.read_table(run_dir, results.CLIENTS_FILE).to_dicts()
    server = results.read_table(run_dir, results.SERVER_FILE).to_dicts()
    lines = [f"run {record['run_id']}: {record['status']}"
             + (f": {record['reason']}" if record.get("reason") else "")]
    if record.get("setup_s") is not None:
        lines[0] += (f" in {record['duration_s']:.1f} s (setup {record['setup_s']:.1f} s,"
                     f" connecting {record.get('connect_s') or 0:.1f} s,"
                     f" teardown {record.get('teardown_s') or 0:.1f} s)")
    if not clients:
        return lines[0]
    lines.append(f"{'client':>6} {'proc':>4} {'connections':>12}  {'errno':<16} {'seconds':>8}")
    for r in clients:
        lines.append(f"{r['client']:>6} {r['proc']:>4} {r['connections'] or 0:>12,}  "
                     f"{r.get('error') or '-':<16} {r.get('elapsed_s') or 0:>8.2f}")
    totals = record.get("totals") or {}
    prediction = record.get("prediction") or {}
    lines.append(f"clients hold {totals.get('connections') or 0:,} connections "
                 f"(model: {prediction.get('total', 0):,}, limited by {prediction.get('limit')})")
    if server:
        errors = sorted({r['error'] for r in server if r.get('error')})
        lines.append(f"server accepted {totals.get('server_accepted') or 0:,} over "
                     f"{len(server)} worker(s)" + (f"; accept() errors: {', '.join(errors)}"
                                                   if errors else ""))
    for note in record.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)
