"""The plan of one run (pure): what defaults became, the run id, the container specs and the
hardening every container the project starts runs with."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from docker.types import Ulimit

from tcplimits.model import fourtuple, hostlimits
from tcplimits import CLIENT_LABEL, ROLE_LABEL, model
from tcplimits.config.params import FIELDS, RunParams

SERVER_PORT = fourtuple.FIRST_SERVER_PORT
AGENTS = "/opt/tcplimits/agents"
USER = "65534:65534"  # nobody: the agents need no privilege at all
SAMPLES_PER_PROCESS = 200  # progress samples: one per 0.5% of the expected count, and
# over the run at most SAMPLES_PER_RUN (at least MIN_SAMPLES_PER_PROCESS a process): each is
# a line through the engine's log streams, ~0.4 ms of the host's CPU between the agent,
# containerd, dockerd and the controller. At the ceiling (100 processes, 1.22 M connections)
# those three used 10.4 CPU-seconds with 200 samples a process against 2.3 with 5, and the
# rate was 40,236/s against 50,349/s.
SAMPLES_PER_RUN = 2_000
MIN_SAMPLES_PER_PROCESS = 10


def samples_per_process(processes: int) -> int:
    """Progress samples each of ``processes`` client processes writes."""
    return min(SAMPLES_PER_PROCESS, max(MIN_SAMPLES_PER_PROCESS,
                                        SAMPLES_PER_RUN // max(1, processes)))


# Least privilege, once for every container: agents, probes and the exported compose.yml.
# The keys are both Docker SDK ``containers.create`` arguments and Compose service keys.
HARDENING: dict[str, Any] = {
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "read_only": True,
    "user": USER,
}


def hardening() -> dict[str, Any]:
    """A fresh copy of HARDENING (callers may extend its lists)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in HARDENING.items()}


# The short-lived containers (engine probes, the NET_ADMIN address helper) run one small
# Python program: bounded like the agents, so that none can fork or grow without limit.
# memswap_limit equal to mem_limit: no swap on top of the memory limit, for every container.
HELPER_MEMORY = 64 * 2**20
HELPER_LIMITS: dict[str, Any] = {"pids_limit": 16, "mem_limit": HELPER_MEMORY,
                                 "memswap_limit": HELPER_MEMORY}


# The server container's CPU weight (cgroup cpu.shares; Docker gives every container 1,024):
# as much as all client containers together, so that the server's share of a busy host's CPU
# does not shrink with the number of containers the clients are spread over. At the default
# weight the server of ten client containers got an eleventh of the CPU and its accept queue
# overflowed (1,343 SYNs dropped at the ceiling rung, each a 1 s retransmit; none with it).
CPU_SHARES = 1024
MAX_CPU_SHARES = 262_144  # the kernel's largest cpu.shares


def server_cpu_shares(client_containers: int) -> int:
    """The server container's cpu.shares beside ``client_containers`` clients."""
    return min(MAX_CPU_SHARES, CPU_SHARES * max(1, client_containers))


@dataclass(frozen=True)
class Resolved:
    """What defaults and "auto" became for one run: recorded, never hidden."""

    server_nofile: int
    server_workers: int
    sample_every: int
    server_cpu_shares: int = CPU_SHARES

    @classmethod
    def of(cls, params: RunParams, engine_nofile_cap: int) -> "Resolved":
        server_nofile = params.server_nofile or engine_nofile_cap
        if params.server_workers == "auto":
            workers = model.auto_server_workers(params, server_nofile)
        else:
            workers = int(params.server_workers)
        per_proc = model.client_terms(params)[0] / params.procs
        samples = samples_per_process(params.clients * params.procs)
        return cls(server_nofile, workers, max(1, int(per_proc // samples)),
                   server_cpu_shares(params.clients))


def new_run_id(params: RunParams, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    digest = hashlib.sha1(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()
    return f"{now:%Y%m%dT%H%M%SZ}-{digest[:6]}"


def memory_limit(connections: int, procs: int) -> int:
    """Bytes: room for a Python interpreter per process and the kernel and user memory of a
    connection's both ends per socket this container holds (its cgroup is charged about
    half of that: measured ~5.1 KB per connection over both ends' cgroups), so a container
    never runs out before the limit being measured."""
    return (64 * 2**20 + procs * 2 * hostlimits.PROCESS_BYTES
            + connections * (hostlimits.KERNEL_BYTES_PER_CONNECTION
                             + hostlimits.USER_BYTES_PER_CONNECTION))


def server_ports(params: RunParams) -> str:
    """The agents' --port value: SERVER_PORT, SERVER_PORT + 1, ... (one per server port)."""
    return ",".join(map(str, fourtuple.server_ports(params.server_ports, SERVER_PORT)))


def container_specs(params: RunParams, resolved: Resolved, run_id: str, image: str,
                    network: str, labels: dict[str, str],
                    instance: str = "") -> dict[str, dict[str, Any]]:
    """Docker SDK ``containers.create`` arguments for the server and each client, by role
    ("server", "client1", ...). The clients' ``--server`` is filled in once the server has
    an address; ``--wait-signal`` lets the engine start all clients at the same moment."""
    per_client = model.client_terms(params)[0]
    prefix = f"tcplimits-{run_id}" + (f"-{instance}" if instance else "")
    loopback = params.network == "loopback"
    port_range = params.client_sysctls()  # the port range and every sysctl field
    # On loopback the server's namespace is the only one: it has no network but lo (nothing
    # to reach, no netfilter rules, no conntrack), and the clients join it; net.* sysctls
    # belong to the namespace, so they go on the server.
    server_net = {"network_mode": "none", "sysctls": port_range} if loopback else {
        "network": network}
    specs = {
        "server": dict(
            hardening(),
            **server_net, detach=True,
            image=image,
            name=f"{prefix}-server",
            hostname="server",
            command=["python3", f"{AGENTS}/server.py", "--port", server_ports(params),
                     "--workers", str(resolved.server_workers), "--backlog", str(params.backlog)]
            + (["--churn"] if params.churn else []),
            ulimits=[Ulimit(name="nofile", soft=resolved.server_nofile,
                            hard=resolved.server_nofile)],
            pids_limit=resolved.server_workers + 8,
            cpu_shares=resolved.server_cpu_shares,
            mem_limit=(server_memory := memory_limit(per_client * params.clients,
                                                     resolved.server_workers)),
            memswap_limit=server_memory,  # no swap beyond the limit
            labels={**labels, ROLE_LABEL: "server"},
        )
    }
    for i in range(1, params.clients + 1):
        # "server" is replaced by the server's address once it has one (bridge).
        server = (",".join(model.loopback_destinations(i, model.destinations(params)))
                  if loopback else "server")
        client_net = ({"network_mode": f"container:{prefix}-server"} if loopback else
                      {"network": network, "hostname": f"client{i}", "sysctls": port_range})
        command = ["python3", f"{AGENTS}/client.py", "--server", server,
                   "--port", server_ports(params), "--client", str(i), "--procs", str(params.procs),
                   "--connect-timeout", str(params.connect_timeout),
                   "--sample-every", str(resolved.sample_every), "--wait-signal"]
        if params.max_connections:
            command += ["--max-connections", str(params.max_connections)]
        if params.settle != FIELDS["settle"].default:
            command += ["--settle", f"{params.settle:g}"]
        command += churn_args(params) or ["--check-signal"]
        if params.bind_mode != FIELDS["bind_mode"].default:
            command += ["--bind-mode", params.bind_mode]
        specs[f"client{i}"] = dict(
            hardening(),
            **client_net, detach=True,
            image=image,
            name=f"{prefix}-client{i}",
            command=command,
            ulimits=[Ulimit(name="nofile", soft=params.nofile, hard=params.nofile)],
            pids_limit=params.procs + 8,
            mem_limit=memory_limit(per_client, params.procs),
            memswap_limit=memory_limit(per_client, params.procs),
            labels={**labels, ROLE_LABEL: "client", CLIENT_LABEL: str(i)},
        )
    return specs


def churn_args(params: RunParams) -> list[str]:
    """The client agent's flags for mode churn (none for mode hold)."""
    if not params.churn:
        return []
    return ["--mode", "churn", "--rate", str(params.rate), "--duration", f"{params.duration:g}",
            "--closer", params.closer]


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
