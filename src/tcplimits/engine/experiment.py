"""One run's resources and lifecycle on the Docker engine. The steps are public methods, called
in this order by ``run_experiment`` (other steps may go between them):

    create_network -> start_server -> add_server_addresses -> start_clients
    -> add_client_addresses -> wait_quiet -> start_connecting -> wait_for_clients
    -> [mode churn: wait_for_duration] -> collect_server

The address steps do nothing unless the run asks for extra addresses (server_addrs or
client_addrs > 1): then the network gets an explicit subnet and ip_range, and a NET_ADMIN
helper adds the addresses in each target's namespace (tcplimits.engine.addresses).

Used as a context manager, ``Experiment`` removes every container and the network it created
when the block ends, whatever happened inside (success, error, timeout, SIGINT, SIGTERM): that
part is ``engine.teardown.Teardown``.
"""

from __future__ import annotations

import queue
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import docker.errors

from tcplimits import INSTANCE_LABEL, LABEL, RUN_LABEL, results
from tcplimits.engine import addresses, faults, host, nat, servers
from tcplimits.model import fourtuple
from tcplimits.engine.faults import RunFailed
from tcplimits.config.params import RunParams
from tcplimits.engine.cleanup import owner_labels
from tcplimits.engine.events import Log, LogReader, RunState, stderr_log
from tcplimits.engine.plan import Resolved, container_specs
from tcplimits.engine.teardown import Teardown

LOOPBACK = "127.0.0.1"
SERVER_READY_TIMEOUT_S = 60
SETTLE_S = 1.0  # the server's count is final once unchanged this long
STOP_TIMEOUT_S = 30


class Experiment(Teardown):
    """One run's resources and timeline. Use as a context manager: leaving it removes every
    container and the network, whatever happened inside."""

    def __init__(self, client, params: RunParams, resolved: Resolved, run_id: str, image: str,
                 log: Log = stderr_log, live: bool = True, local_host: bool = True):
        self.client, self.params, self.resolved = client, params, resolved
        self.local_host = local_host  # the engine's host is this machine: its /proc is read
        self.quiet: host.Quiet | None = None
        self.run_id, self.image, self.log, self.live = run_id, image, log, live
        self.instance = uuid.uuid4().hex[:8]
        self.labels = {LABEL: "1", RUN_LABEL: run_id, **owner_labels(),
                       INSTANCE_LABEL: self.instance}
        self.network_name = f"tcplimits-{run_id}-{self.instance}"
        self.specs = container_specs(params, resolved, run_id, image, self.network_name,
                                     self.labels, self.instance)
        self.events: queue.Queue = queue.Queue()
        self.state = RunState()
        self.containers: dict[str, Any] = {}
        self.readers: dict[str, LogReader] = {}
        self.network = None
        self.server_address: str | None = None
        self.deadline = time.monotonic() + params.timeout
        self.timeline: dict[str, float] = {}
        self._setup_started: float | None = None
        self._connect_started: float | None = None
        self._last_live: tuple[float, int] | None = None  # for the rate on the live line
        self.snapshots: dict[str, dict] = {}  # footprint snapshots by moment
        self.connect_started_at: float | None = None  # wall clock, to align agents' samples
        self.created_at = time.time()  # for the engine's events of this run
        self.left_behind: list[str] = []  # what a lost engine kept us from removing
        self._engine_gone = False
        self.address_plan: addresses.AddressPlan | None = None
        self.addresses: dict[str, list[str]] = {}    # role -> every IPv4 address it had
        self.helpers: list[dict] = []                # what each NET_ADMIN helper did
        self.network_ipam: list[dict] | None = None  # the network's subnet(s), as created
        self.nat = nat.Gateway(self, log=log)  # nat gateway's steps; no-ops with nat none

    def __enter__(self) -> "Experiment":
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    @property
    def client_roles(self) -> list[str]:
        return [r for r in self.specs if r.startswith("client")]

    # -- the lifecycle, step by step

    def create_network(self) -> None:
        """The run's internal bridge network; setup time counts from here. On loopback there
        is none: the server's own namespace is the network."""
        self._setup_started = time.monotonic()
        if self.params.network == "loopback":
            return
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

    def add_server_addresses(self) -> list[str]:
        """The server's extra addresses (the book's virtual IPs); returns all of them."""
        return self._add_addresses("server")

    def add_client_addresses(self) -> None:
        """Each client's extra source addresses, before the start signal: no client binds
        before they exist."""
        for role in self.client_roles:
            self._add_addresses(role)

    def start_server(self) -> str:
        """Start the server and wait until it listens; returns its address."""
        servers.start_upstream(self)  # nginx-proxy's upstream, if any (engine/servers.py)
        self.containers["server"] = self.client.containers.create(**self.specs["server"])
        self.containers["server"].start()
        self._follow("server")
        self.wait_until(lambda: self.state.server_listening is not None, "the server to listen",
                        limit=SERVER_READY_TIMEOUT_S, watch=["server"])
        self.server_address = self.address("server")
        return self.server_address

    def start_clients(self) -> None:
        """Create and start every client, pointed at the server's address, and wait until
        each has reported ready (its port range and the ports already held)."""
        roles = self.client_roles
        for role in roles:
            spec = dict(self.specs[role], command=list(self.specs[role]["command"]))
            where = spec["command"].index("--server") + 1
            if spec["command"][where] == "server":  # bridge: the server's address(es), now known
                spec["command"][where] = ",".join(self.addresses.get("server")
                                                  or [self.server_address])
            extra = self.address_plan.extra.get(role) if self.address_plan else None
            if extra and self.params.bind_mode != fourtuple.CONNECT:
                spec["command"] += ["--sources", ",".join(extra)]
            self.containers[role] = self.client.containers.create(**spec)
        for role in roles:
            self.containers[role].start()
            self._follow(role)
        self.wait_until(lambda: len(self.state.ready) == self.params.clients,
                        "the clients to start", limit=SERVER_READY_TIMEOUT_S,
                        watch=["server", *roles])
        self.timeline["setup_s"] = time.monotonic() - (self._setup_started or time.monotonic())

    def measure(self, moment: str) -> dict | None:
        """The host's counters and each container's memory now (``footprint.snapshot``),
        kept under ``moment``; None when the engine is not on this machine."""
        from tcplimits.engine import footprint

        if not self.local_host:
            return None
        if moment == "held":  # every connection accepted, not still in the accept queue
            self._settle_server()
        ids = [(role, c.id) for role, c in self.containers.items()]
        snap = footprint.snapshot(ids)
        if moment == "held" and self.params.network == "bridge" and self.server_address:
            from tcplimits.engine.plan import SERVER_PORT

            snap["host_conntrack_run"] = footprint.conntrack_entries(self.server_address,
                                                                     SERVER_PORT)
        self.snapshots[moment] = snap
        return snap

    def wait_quiet(self) -> host.Quiet:
        """Wait (at most quiet_host_timeout) until the host's kernel holds at most
        quiet_host_sockets closed sockets of earlier runs, which slow connect(); past that, go
        on marked noisy.
        The wait does not count against the run's timeout."""
        def waiting(state: dict) -> None:
            self.log(f"waiting up to {self.params.quiet_host_timeout:g} s for a quiet host: "
                     f"{host.leftover_sockets(state):,} closed sockets linger in its kernel "
                     f"(quiet: at most {self.params.quiet_host_sockets:,})")

        self.quiet = host.wait_quiet(self.params.quiet_host_sockets,
                                     self.params.quiet_host_timeout,
                                     read=lambda: host.read_state(self.local_host),
                                     waiting=waiting)
        self.deadline += self.quiet.waited_s
        self.timeline["quiet_wait_s"] = self.quiet.waited_s
        if self.quiet.noisy:
            self.log(f"note: {self.quiet.reason}; running anyway, the point is marked noisy")
        return self.quiet

    def start_connecting(self) -> None:
        """Signal every client at once: they start connecting together."""
        self._connect_started = time.monotonic()
        self.connect_started_at = time.time()
        for role in self.client_roles:
            self.containers[role].kill(signal="SIGUSR1")

    def wait_for_clients(self) -> None:
        """Wait (with a live count) until every client process has stopped and reported."""
        expected_results = self.params.clients * self.params.procs
        if not self.params.churn:  # the held check: once every process stopped connecting
            self.wait_until(lambda: len(self.state.connected) == expected_results,
                            "every client process to stop connecting",
                            watch=["server", *self.client_roles], progress=True)
            self.timeline["connect_s"] = time.monotonic() - (self._connect_started
                                                             or time.monotonic())
            for role in self.client_roles:
                self.containers[role].kill(signal="SIGUSR2")
        self.wait_until(lambda: len(self.state.results) == expected_results,
                        "every client process to stop", watch=["server", *self.client_roles],
                        progress=self.params.churn)
        self.timeline.setdefault("connect_s", time.monotonic() - (self._connect_started
                                                                  or time.monotonic()))

    def wait_for_duration(self) -> None:
        """Mode churn: the run lasts its duration even when every client stopped early, so
        that the TIME_WAIT series shows what the stopped clients left behind."""
        start = self._connect_started or time.monotonic()
        end = start + self.params.duration
        tty, last_print = sys.stderr.isatty(), 0.0
        while (now := time.monotonic()) < min(end, self.deadline):
            self.drain(min(0.2, max(0.0, end - now)))
            if self.live and self.state.time_wait and now - last_print >= (0.5 if tty else 10.0):
                last_print = now
                self._print_time_wait(now - start, tty)
        if self.live and tty and last_print:
            print(file=sys.stderr)

    def collect_server(self) -> None:
        """Let the server's count settle, stop it, and wait for each worker's final count."""
        self._settle_server()
        self.containers["server"].kill(signal="SIGTERM")
        # a real server reports its own process count (engine/servers.py)
        workers = (self.state.server_listening or {}).get("workers") or self.resolved.server_workers
        self.wait_until(lambda: len(self.state.server_results) == workers,
                        "the server's final counts", limit=self.close_wait(STOP_TIMEOUT_S),
                        watch=["server"])

    # -- what the steps share

    def address(self, role: str) -> str:
        """The container's address on the run's network (on loopback, the server's lo)."""
        if self.params.network == "loopback":
            return LOOPBACK
        self.containers[role].reload()
        networks = self.containers[role].attrs["NetworkSettings"]["Networks"]
        return networks[self.network_name]["IPAddress"]

    def client_addresses(self) -> dict[int, str]:
        """Client number -> address, for the clients that exist (best effort)."""
        addresses = {}
        for role in self.client_roles:
            if role in self.containers:
                try:
                    addresses[int(role[len("client"):])] = self.address(role)
                except Exception as err:  # removed already, or the engine is gone
                    if not (isinstance(err, docker.errors.APIError)
                            or faults.is_engine_gone(err)):
                        raise
        return addresses

    def drain(self, timeout: float = 0.05) -> None:
        """Take the agents' queued events into ``state``."""
        self.state.drain(self.events, timeout)

    def wait_until(self, done: Callable[[], bool], what: str, *, limit: float | None = None,
                   watch: list[str], progress: bool = False) -> None:
        """Take events until ``done()``; RunFailed on the deadline (the run's, or ``limit``
        seconds), a dead process, or a watched container that exited."""
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
            self._check(watch, what)
            self.drain(0.2)
            if progress and self.live and now - last_print >= (0.5 if tty else 5.0):
                last_print = now
                self._print_live(tty)
        if progress and self.live:  # the final count, on a terminal or in a log
            self._print_live(tty)
            if tty:
                print(file=sys.stderr)

    def save_logs(self, out_dir: Path) -> None:
        for role, reader in self.readers.items():
            reader.join(timeout=2)
            reader.save(out_dir / results.LOGS_DIR / f"{role}.log")

    # -- internals

    def _add_addresses(self, role: str) -> list[str]:
        """Every address of ``role`` after adding its extra ones (Docker's first), through a
        NET_ADMIN helper in its namespace; the agent itself keeps no capability."""
        primary = self.address(role)
        extra = self.address_plan.extra.get(role, []) if self.address_plan else []
        if extra:
            container = self.containers[role]
            done = addresses.add_addresses(self.client, self.image, container, extra,
                                           self.address_plan.prefix, self.labels,
                                           name=f"{container.name}-netadmin")
            self.helpers.append(done)
            missing = set(extra) - set(done["addresses_after"])
            if missing:
                raise RunFailed(f"{role}: addresses {sorted(missing)} missing after the "
                                "helper ran")
        self.addresses[role] = [primary, *extra]
        return self.addresses[role]

    def _follow(self, role: str) -> None:
        reader = LogReader(self.containers[role], role, self.events)
        reader.start()
        self.readers[role] = reader

    def _settle_server(self) -> None:
        """The server accepts what the clients connected, a little later: wait until its count
        reaches the clients' total or stops changing."""
        target = self.state.connections
        last, since = -1, time.monotonic()
        end = min(self.deadline, time.monotonic() + 30)
        while time.monotonic() < end:
            self.drain(0.2)
            self._check(["server"], "the server's count to settle")
            accepted = self.state.accepted
            if accepted >= target:
                return
            if accepted != last:
                last, since = accepted, time.monotonic()
            elif time.monotonic() - since >= SETTLE_S:
                return

    def _print_live(self, tty: bool) -> None:
        per_client: dict[int, int] = {}
        for (c, _), n in self.state.progress.items():
            per_client[c] = per_client.get(c, 0) + n
        done = max(len(self.state.results), len(self.state.connected))
        now, count = time.monotonic(), self.state.connections
        since = self._last_live or (self._connect_started or now, 0)
        rate = (count - since[1]) / (now - since[0]) if now > since[0] else 0.0
        self._last_live = (now, count)
        parts = " ".join(f"c{c}={n:,}" for c, n in sorted(per_client.items()))
        if len(per_client) > 8:  # a line per terminal row: the total says enough
            parts = f"{len(per_client)} clients"
        line = (f"connections {count:,} ({parts}) at {rate:,.0f}/s; server accepted "
                f"{self.state.accepted:,}; processes stopped {done}/"
                f"{self.params.clients * self.params.procs}")
        _show(line, tty)

    def _print_time_wait(self, elapsed: float, tty: bool) -> None:
        """Mode churn, once every client stopped: the newest TIME_WAIT count per side."""
        newest: dict[tuple[str, int | None], int] = {}
        for sample in self.state.time_wait:
            newest[(sample["role"], sample.get("client"))] = sample["time_wait"]
        if self.params.network == "loopback":  # one namespace: every agent counts the same
            counts = f"{newest.get(('server', None), 0):,} in the shared namespace"
        else:
            clients = sum(n for (role, _), n in newest.items() if role != "server")
            counts = f"clients {clients:,}, server {newest.get(('server', None), 0):,}"
        line = (f"every client process stopped; {elapsed:.0f} of {self.params.duration:g} s: "
                f"TIME_WAIT {counts}")
        _show(line, tty)

    def _check(self, watch: list[str], what: str) -> None:
        """Fail as soon as a process died or a container the run needs has stopped."""
        if self.state.died:
            died = "; ".join(self.state.died)
            oom = self.oom_killed(wait_s=2.0)
            if oom:
                raise RunFailed("; ".join(faults.oom_reason(role, self.specs[role].get(
                    "mem_limit")) for role in oom) + f": {died}", faults.OOM)
            raise RunFailed(died, faults.WORKER_DIED)
        if self.state.bad:  # an agent broke the protocol: its numbers cannot be trusted
            raise RunFailed(bad_output_reason(self.state.bad), faults.AGENT_OUTPUT)
        for role in watch:
            if role in self.state.closed:
                reason, fault = self._exit_reason(role)
                raise RunFailed(f"{reason} while waiting for {what}", fault)

    def oom_killed(self, wait_s: float = 0.0) -> list[str]:
        """Roles whose container saw the kernel's OOM killer (the engine's "oom" events), even
        when only a process in it died and the container lives on. The event may trail the
        death the agent reported by a moment: look again for up to ``wait_s``."""
        end = time.monotonic() + wait_s
        while True:
            try:
                events = self.client.events(
                    since=self.created_at, until=f"{time.time():.3f}", decode=True,
                    filters={"type": "container", "event": "oom",
                             "label": f"{INSTANCE_LABEL}={self.instance}"})
                names = {e.get("Actor", {}).get("Attributes", {}).get("name") for e in events}
            except docker.errors.APIError:
                return []
            roles = [role for role, c in self.containers.items() if c.name in names]
            if roles or time.monotonic() >= end:
                return roles
            time.sleep(0.25)

    def _exit_reason(self, role: str) -> tuple[str, str]:
        """Why a container stopped, from the engine's State (OOMKilled, exit code). A lost
        engine raises: that is the fault, not the container."""
        container = self.containers[role]
        try:
            container.reload()
        except docker.errors.APIError as err:
            return f"{role} container gone: {err}", faults.CONTAINER_EXITED
        reason, fault = faults.exit_description(role, container.attrs["State"],
                                                self.specs[role].get("mem_limit"))
        # What the container said besides its events (a traceback, a message), if anything.
        said = [line for line in self.readers[role].lines
                if line.strip() and not line.startswith(("{", "[tcplimits:"))] \
            if role in self.readers else []
        return reason + (f" (last output: {'; '.join(said[-2:])[:200]})" if said else ""), fault

def _show(line: str, tty: bool) -> None:
    """A live line: rewritten in place on a terminal, one line each time in a log."""
    print(("\r" + line + "\033[K") if tty else line, end="" if tty else "\n",
          file=sys.stderr, flush=True)


def bad_output_reason(bad: list[str]) -> str:
    """A run's reason when agents' events were refused (engine/protocol.py)."""
    return (f"an agent said what no agent says ({len(bad)} event(s) refused): "
            + "; ".join(bad[:3]))
