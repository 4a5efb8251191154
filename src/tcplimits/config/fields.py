"""Every parameter of an experiment, once: ``FIELDS`` (name, kind, default, help, bounds,
choices) and the words and bounds they use. The CLI's flags, the config schema, the point ids
and the report's descriptions are made from it; ``params.RunParams`` holds one value of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Linux refuses an ip_local_port_range low end below ip_unprivileged_port_start (1024)
# inside a container, and ports are 16-bit.
PORT_MIN = 1024
PORT_MAX = 65535
# fs.nr_open's default: no hard limit can exceed it.
NOFILE_MAX = 1_048_576
KERNEL_DEFAULT_PORT_RANGE = (32768, 60999)
# How the containers reach each other (issue 10): a Docker bridge network, or the server's
# own loopback that the clients share (no bridge, no netfilter rules, no conntrack).
NETWORKS = ("bridge", "loopback")
# The 4-tuple's members: server ports, server addresses, client source addresses. Addresses
# come from the experiment network's /24 (see tcplimits.engine.addresses), so 64 of each fit.
TUPLE_MAX = 64
# How a client gets its source port (see agents/client.py and model.tuple_capacity).
BIND_MODES = ("connect", "bind", "bind-no-port")
# (source, destination) pairs one client process spreads over: each is one row of the
# destinations table and one entry of the agent's report.
PAIRS_MAX = 4096

# Clients behind a NAT (issue 16): none (the direct path) or a router container that
# translates their source addresses (tcplimits.engine.nat, tcplimits.model.nat); published
# (Docker's own path to a published port) is refused before any container starts
# (config.params.PUBLISHED_REFUSAL says why).
NATS = ("none", "gateway", "published")
NAT_RANDOM = ("none", "random", "fully")
NAT_ADDRS_MAX = 16  # Azure's NAT gateway takes up to 16 public addresses, AWS's up to 8
# The NAT's ports are written into packets, never bound: ip_unprivileged_port_start (PORT_MIN)
# does not apply (measured: MASQUERADE --to-ports below 1024 holds its whole pool).
NAT_PORT_MIN = 1

MODES = ("hold", "churn")
# The server the clients connect to (issue 21): the agent, or a real one from Debian's
# packages (tcplimits.engine.servers runs it, tcplimits.model.servers predicts it).
SERVERS = ("agent", "nginx", "nginx-proxy", "redis")
NGINX_SERVERS = ("nginx", "nginx-proxy")
CLOSERS = ("client", "server")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "int", "float", "port_range", "workers", "rate", "connections", "choice"
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None allowed (means "not bounded" / "resolved at run time")
    choices: tuple[str, ...] = ()  # kind "choice": the accepted words
    # A per-namespace sysctl this field sets in every client container (client_sysctls).
    sysctl: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        Field("port_range", "port_range", "32768-60999",
              "net.ipv4.ip_local_port_range in each client container, LO-HI inclusive "
              "(kernel default 32768-60999)"),
        Field("nofile", "int", 15000,
              "RLIMIT_NOFILE (soft = hard) of each client process", 1, NOFILE_MAX),
        Field("procs", "int", 1,
              "processes per client container; they share its port pool, each has its own nofile",
              1, 64),
        Field("clients", "int", 1, "client containers, each with its own IP address", 1, 32),
        Field("server_nofile", "int", None,
              "RLIMIT_NOFILE of each server worker (default: the engine's cap)", 16, NOFILE_MAX,
              optional=True),
        Field("server_workers", "workers", "auto",
              "server worker processes sharing the listening socket; 'auto' = enough that "
              "the server never limits the run", 1, 256),
        # 4096, the kernel's somaxconn, not Python's listen() default of 128 (the seed's
        # server): at 128 the accept queue of a server sharing 2 cores with its clients
        # overflowed in 4 of 20 points of the default sweep, and each dropped SYN costs the
        # client a 1 s retransmit (the counts stand, the times do not).
        Field("backlog", "int", 4096, "backlog passed to listen() (capped by "
              "net.core.somaxconn, 4096 in a new namespace)", 0, 65535),
        Field("max_connections", "int", None,
              "optional bound on connections per client process", 1, NOFILE_MAX, optional=True),
        # Issue 22: a total instead of a share per process, or the host's own ceiling.
        Field("connections", "connections", None,
              "connections all client processes hold together, spread evenly over them (each "
              "stops at its share), or 'ceiling': the most this host can hold with this "
              "layout and network as it is set up (`tcplimits ceiling`), resolved when the "
              "run starts and recorded as the number", 1, 100_000_000, optional=True),
        Field("connect_timeout", "float", 3.0,
              "seconds before one connect() is given up (a dropped SYN would otherwise "
              "hang for ~2 minutes)", 0.1, 300),
        Field("timeout", "float", 600.0, "seconds for the whole run before it is stopped",
              5, 86400),
        # One host, one million (issue 10).
        Field("network", "choice", "bridge",
              "bridge: an internal Docker bridge network (the host's netfilter and conntrack "
              "see every connection); loopback: the server has no network, the clients join "
              "its namespace and connect over 127.0.0.0/8 (no conntrack, one port pool per "
              "destination address)", choices=NETWORKS),
        # A quiet host before connecting (tcplimits.engine.host): bounds on the run, not physics.
        Field("quiet_host_timeout", "float", 60.0,
              "seconds to wait, before connecting, for the host's closed sockets (orphans + "
              "TIME-WAIT) to drain to quiet_host_sockets; past it the point runs, marked "
              "noisy",
              0, 3600),
        Field("quiet_host_sockets", "int", 1000,
              "closed sockets (orphans + TIME-WAIT) the host may hold for a point to count "
              "as quiet", 0, 10_000_000),
        # --- churn (issue 11): connections opened and closed at a rate
        Field("mode", "choice", "hold",
              "hold: open connections and keep them until the first failure; churn: open, "
              "exchange a few bytes, close, repeat for --duration", choices=MODES),
        Field("rate", "rate", "max",
              "churn: connections per second per client process, or max (as fast as it goes)",
              1, 1_000_000),
        Field("duration", "float", 60.0, "churn: seconds each client process churns", 1, 3600),
        Field("closer", "choice", "client",
              "churn: which end closes first (and so keeps the TIME_WAIT socket)",
              choices=CLOSERS),
        Field("tw_reuse", "int", 2,
              "net.ipv4.tcp_tw_reuse in each client container: 0 off, 1 on, 2 loopback only "
              "(kernel default)", 0, 2, sysctl="net.ipv4.tcp_tw_reuse"),
        Field("tw_reuse_delay", "int", None,
              "net.ipv4.tcp_tw_reuse_delay in each client container, ms before tcp_tw_reuse "
              "may take a TIME_WAIT port (Linux 6.13+; default: the kernel's, 1000)", 1, 600_000,
              optional=True, sysctl="net.ipv4.tcp_tw_reuse_delay"),
        Field("timestamps", "int", None,
              "net.ipv4.tcp_timestamps in each client container (tcp_tw_reuse needs them; "
              "default: the kernel's, 1)", 0, 2, optional=True, sysctl="net.ipv4.tcp_timestamps"),
        # The 4-tuple, member by member (issue 9).
        Field("server_ports", "int", 1,
              "ports the server listens on; every client process spreads its connections "
              "over them", 1, TUPLE_MAX),
        Field("server_addrs", "int", 1,
              "IPv4 addresses the server answers on (the book's virtual IPs); clients "
              "spread over them", 1, TUPLE_MAX),
        Field("client_addrs", "int", 1,
              "source addresses of each client container; its processes spread over them "
              "(plain connect() ignores them: the route picks the source)", 1, TUPLE_MAX),
        Field("bind_mode", "choice", "connect",
              "how a client gets its source port: connect (plain connect()), bind "
              "(bind((addr, 0)) then connect()), bind-no-port (bind() with "
              "IP_BIND_ADDRESS_NO_PORT, then connect())", choices=BIND_MODES),
        # Behind a NAT (issue 16).
        Field("nat", "choice", "none",
              "none: clients reach the server directly; gateway: clients reach the server "
              "through a NAT router container on the run's network (source NAT); published: "
              "Docker's own path to a published port (refused: an internal network gets no "
              "published ports)", choices=NATS),
        Field("nat_addrs", "int", 1,
              "nat gateway: addresses the NAT translates to (its SNAT address pool)", 1,
              NAT_ADDRS_MAX),
        Field("nat_port_range", "port_range", None,
              "nat gateway: the NAT's port range, LO-HI, from port 1 (default: MASQUERADE's "
              "own, 1024-65535 for source ports >= 1024; it ignores ip_local_port_range)",
              NAT_PORT_MIN, optional=True),
        Field("nat_random", "choice", "none",
              "nat gateway: how the NAT picks a port: none (keep the client's port when free, "
              "else search from a random offset), random (--random), fully (--random-fully)",
              choices=NAT_RANDOM),
        # Real servers (issue 21): nginx's and Redis's own names; unset = the package's.
        Field("server", "choice", "agent",
              "the server: agent (tcplimits' own), nginx (Debian's, as an HTTP server), "
              "nginx-proxy (nginx proxying TCP to an agent server), redis (Debian's)",
              choices=SERVERS),
        Field("worker_connections", "int", None,
              "nginx: events { worker_connections } (default: Debian's nginx.conf, 768)",
              8, NOFILE_MAX, optional=True),
        Field("worker_processes", "int", None,
              "nginx: worker_processes (default: Debian's nginx.conf, auto = one per CPU)",
              1, 64, optional=True),
        Field("maxclients", "int", None,
              "redis: maxclients (default: Redis's 10000, lowered to the server's nofile "
              "minus 32)", 1, NOFILE_MAX, optional=True),
        Field("settle", "float", 1.0,
              "seconds the clients wait, once every client process has stopped connecting, "
              "before each checks that every connection it opened is still established "
              "(held); a server may close idle ones, nginx after client_header_timeout, 60 s",
              0, 3600),
        Field("server_port_range", "port_range", None,
              "nginx-proxy: net.ipv4.ip_local_port_range of the server container, LO-HI: the "
              "pool its upstream connections draw from (default: the kernel's, "
              "32768-60999)", optional=True),
    ]
}
# Fields that only mean something in churn mode: refused with mode hold unless left default.
CHURN_ONLY = ("rate", "duration", "closer")
# Fields that only mean something behind a NAT: refused with nat none unless left default.
NAT_ONLY = ("nat_addrs", "nat_port_range", "nat_random")
