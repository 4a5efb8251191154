"""The parameters of one experiment: one typed object, validated before any container starts.

Every field is a flag of `tcplimits run` (``--port-range`` for ``port_range``) and a key a
workflow grid point may set. Adding a dimension means adding one entry to ``FIELDS`` and a
field to ``RunParams`` whose default is ``_default(name)``; the CLI, the config schema and
the point ids follow from them.
"""

from __future__ import annotations

import dataclasses
import math
import re
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
# translates their source addresses (tcplimits.engine.nat, tcplimits.model.nat).
NATS = ("none", "gateway")
NAT_RANDOM = ("none", "random", "fully")
NAT_ADDRS_MAX = 16  # Azure's NAT gateway takes up to 16 public addresses, AWS's up to 8

MODES = ("hold", "churn")
# The server the clients connect to (issue 21): the agent, or a real one from Debian's
# packages (tcplimits.engine.servers runs it, tcplimits.model.servers predicts it).
SERVERS = ("agent", "nginx", "nginx-proxy", "redis")
NGINX_SERVERS = ("nginx", "nginx-proxy")
CLOSERS = ("client", "server")
# Fields that accept a word besides an integer.
_WORDS = {"workers": "auto", "rate": "max", "connections": "ceiling"}

_RANGE_RE = re.compile(r"^\s*(\d+)\s*[-\s]\s*(\d+)\s*$")


class ParamError(ValueError):
    """A bad parameter: names the key (or flag) and the value."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}={value!r}: {reason}")


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
              "none: clients reach the server directly; gateway: clients sit on a network of "
              "their own and reach the server through a NAT router container (source NAT)",
              choices=NATS),
        Field("nat_addrs", "int", 1,
              "nat gateway: addresses the NAT translates to (its SNAT address pool)", 1,
              NAT_ADDRS_MAX),
        Field("nat_port_range", "port_range", None,
              "nat gateway: the NAT's port range, LO-HI (default: MASQUERADE's own, "
              "1024-65535 for source ports >= 1024; it ignores ip_local_port_range)",
              optional=True),
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


def _check_nat(params: "RunParams") -> None:
    """Combinations the NAT path cannot run, refused with the reason."""
    if params.nat == "none":
        for name in NAT_ONLY:
            if getattr(params, name) != FIELDS[name].default:
                raise ParamError(name, getattr(params, name), "applies to nat gateway only "
                                 "(set nat: gateway, or leave it out)")
        return
    if params.network != "bridge":
        raise ParamError("nat", params.nat, "needs network bridge (the router shares the "
                         "run's bridge network; loopback has no route to translate)")
    if params.client_addrs != 1:
        raise ParamError("client_addrs", params.client_addrs, "must be 1 with nat gateway "
                         "(the router translates each client's one address; extra source "
                         "addresses behind a NAT are not supported)")


def parse_port_range(value: Any, key: str = "port_range") -> tuple[int, int]:
    """'32768-60999' (or '32768 60999', or a 2-sequence) -> (32768, 60999), validated."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = value
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
            raise ParamError(key, value, "expected two integers LO-HI")
    elif isinstance(value, str):
        m = _RANGE_RE.match(value)
        if not m:
            raise ParamError(key, value, "expected LO-HI, two integers such as 32768-60999")
        lo, hi = int(m.group(1)), int(m.group(2))
    else:
        raise ParamError(key, value, "expected LO-HI, such as 32768-60999")
    if lo > hi:
        raise ParamError(key, value, f"reversed range: low end {lo} is above high end {hi}")
    if lo < PORT_MIN:
        raise ParamError(key, value,
                         f"low end {lo} is below {PORT_MIN} (ip_unprivileged_port_start; "
                         "a container refuses it)")
    if hi > PORT_MAX:
        raise ParamError(key, value, f"high end {hi} is above {PORT_MAX}")
    return lo, hi


def port_count(port_range: Any) -> int:
    """Ports in a range, both ends included: the one place they are counted."""
    lo, hi = parse_port_range(port_range)
    return hi - lo + 1


def _default(name: str) -> Any:
    """A RunParams field's default: FIELDS holds it, the dataclass only refers to it."""
    return FIELDS[name].default


def _coerce(field: Field, value: Any, key: str) -> Any:
    if field.kind == "choice" and isinstance(value, str) and value.strip().lower() in field.choices:
        return value.strip().lower()  # a choice may be the word "none" (nat, nat_random)
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
        if field.optional:
            return None
        raise ParamError(key, value, "a value is required")
    if field.kind == "port_range":
        lo, hi = parse_port_range(value, key)
        return f"{lo}-{hi}"
    word = _WORDS.get(field.kind)
    if word and isinstance(value, str) and value.strip().lower() == word:
        return word
    if field.kind == "choice":
        if isinstance(value, str) and value.strip().lower() in field.choices:
            return value.strip().lower()
        raise ParamError(key, value, f"expected one of {', '.join(field.choices)}")
    if isinstance(value, bool):
        raise ParamError(key, value, "expected a number, not a boolean")
    if field.kind in ("int", "workers", "rate", "connections"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            if not re.fullmatch(r"\s*[+-]?\d+\s*", value):
                extra = f" or '{word}'" if word else ""
                raise ParamError(key, value, f"expected an integer{extra}")
            value = int(value)
        if not isinstance(value, int):
            raise ParamError(key, value, "expected an integer")
    else:  # float
        given = value
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParamError(key, value, "expected a number of seconds") from None
        if not isinstance(value, (int, float)):
            raise ParamError(key, value, "expected a number")
        value = float(value)
        # NaN passes every bound (each comparison is false): --timeout nan would disable
        # every deadline. Infinity is no number of seconds either.
        if not math.isfinite(value):
            raise ParamError(key, given, "expected a finite number (not NaN or infinity)")
    if field.minimum is not None and value < field.minimum:
        raise ParamError(key, value, f"must be at least {field.minimum:g}")
    if field.maximum is not None and value > field.maximum:
        raise ParamError(key, value, f"must be at most {field.maximum:g}")
    return value


@dataclass(frozen=True)
class RunParams:
    """What one experiment was asked to do. Immutable; build it with ``RunParams.from_mapping``."""

    port_range: str = _default("port_range")
    nofile: int = _default("nofile")
    procs: int = _default("procs")
    clients: int = _default("clients")
    server_nofile: int | None = _default("server_nofile")
    server_workers: int | str = _default("server_workers")
    backlog: int = _default("backlog")
    max_connections: int | None = _default("max_connections")
    connections: int | str | None = _default("connections")
    connect_timeout: float = _default("connect_timeout")
    timeout: float = _default("timeout")
    network: str = _default("network")
    quiet_host_timeout: float = _default("quiet_host_timeout")
    quiet_host_sockets: int = _default("quiet_host_sockets")
    mode: str = _default("mode")
    rate: int | str = _default("rate")
    duration: float = _default("duration")
    closer: str = _default("closer")
    tw_reuse: int = _default("tw_reuse")
    tw_reuse_delay: int | None = _default("tw_reuse_delay")
    timestamps: int | None = _default("timestamps")
    server_ports: int = _default("server_ports")
    server_addrs: int = _default("server_addrs")
    client_addrs: int = _default("client_addrs")
    bind_mode: str = _default("bind_mode")
    nat: str = _default("nat")
    nat_addrs: int = _default("nat_addrs")
    nat_port_range: str | None = _default("nat_port_range")
    nat_random: str = _default("nat_random")
    server: str = _default("server")
    worker_connections: int | None = _default("worker_connections")
    worker_processes: int | None = _default("worker_processes")
    maxclients: int | None = _default("maxclients")
    server_port_range: str | None = _default("server_port_range")
    settle: float = _default("settle")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, flag_names: bool = False) -> "RunParams":
        """Validate and coerce; unknown keys are refused. ``flag_names`` words errors as flags."""
        out = {}
        for key, value in values.items():
            if key not in FIELDS:
                known = ", ".join(FIELDS)
                raise ParamError(key, value, f"unknown parameter (known: {known})")
            field = FIELDS[key]
            out[key] = _coerce(field, value, field.flag if flag_names else key)
        try:
            return cls(**out)
        except ParamError as err:  # a check across fields: name the flag too
            if flag_names and err.key in FIELDS:
                raise ParamError(FIELDS[err.key].flag, err.value, err.reason) from None
            raise

    def __post_init__(self) -> None:
        # Direct construction validates too, so no unchecked object exists.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(FIELDS[f.name], value, f.name)
            if coerced != value or type(coerced) is not type(value):
                object.__setattr__(self, f.name, coerced)
        pairs = self.server_addrs * self.server_ports * self.client_addrs
        if pairs > PAIRS_MAX:
            raise ParamError("server_addrs x server_ports x client_addrs", pairs,
                             f"at most {PAIRS_MAX} (source, destination) pairs per client "
                             "process")
        if self.network == "loopback":
            # loopback spreads over the 127.x destinations the model picks (model.destinations)
            for name in ("server_addrs", "client_addrs"):
                if getattr(self, name) != FIELDS[name].default:
                    raise ParamError(name, getattr(self, name), "needs network bridge (on "
                                     "loopback every client spreads over 127.x addresses of "
                                     "its own; leave it out or set network: bridge)")
        _check_nat(self)
        if self.mode != "churn":
            for name in CHURN_ONLY:
                if getattr(self, name) != FIELDS[name].default:
                    raise ParamError(name, getattr(self, name), "applies to mode churn only "
                                     "(set mode: churn, or leave it out)")
        _check_server(self)
        if self.churn and self.duration >= self.timeout:
            raise ParamError("duration", self.duration,
                             f"must be shorter than timeout ({self.timeout:g} s), which "
                             "bounds the whole run")

    @property
    def gateway(self) -> bool:
        """The clients reach the server through the NAT router (nat gateway)."""
        return self.nat == "gateway"

    @property
    def real_server(self) -> bool:
        return self.server != "agent"

    @property
    def churn(self) -> bool:
        return self.mode == "churn"

    @property
    def rate_per_s(self) -> int | None:
        """The churn rate asked per client process; None for "max"."""
        return None if self.rate == "max" else int(self.rate)

    @property
    def port_lo(self) -> int:
        return parse_port_range(self.port_range)[0]

    @property
    def port_hi(self) -> int:
        return parse_port_range(self.port_range)[1]

    @property
    def port_count(self) -> int:
        return port_count(self.port_range)

    def client_sysctls(self) -> dict[str, str]:
        """Per-namespace sysctls of each client container: the port range, and every field
        that names a sysctl (a new TCP setting is one Field with ``sysctl=``); an optional
        field left unset keeps the kernel's value."""
        out = {"net.ipv4.ip_local_port_range": f"{self.port_lo} {self.port_hi}"}
        for name, field in FIELDS.items():
            if field.sysctl and getattr(self, name) is not None:
                out[field.sysctl] = str(getattr(self, name))
        return out

    @property
    def destinations(self) -> int:
        """(server address, server port) pairs every client process spreads over."""
        return self.server_addrs * self.server_ports

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_args(self) -> list[str]:
        """The `tcplimits run` flags that reproduce these parameters."""
        args = []
        for name, value in self.to_dict().items():
            if value is not None:
                args += [FIELDS[name].flag, str(value)]
        return args


# Fields each real server reads, and the agent-server fields a real server has no use for.
SERVER_ONLY = {"worker_connections": NGINX_SERVERS, "worker_processes": NGINX_SERVERS,
               "maxclients": ("redis",), "server_port_range": ("nginx-proxy",)}
AGENT_SERVER_ONLY = ("server_workers", "backlog", "server_ports", "server_addrs")


def _check_server(p: RunParams) -> None:
    """Refuse server settings that the chosen server does not read, and real-server runs the
    engine cannot make (naming why)."""
    for name, servers in SERVER_ONLY.items():
        if getattr(p, name) is not None and p.server not in servers:
            raise ParamError(name, getattr(p, name), f"applies to server {' or '.join(servers)} "
                             f"only (server is {p.server})")
    if not p.real_server:
        return
    for name in AGENT_SERVER_ONLY:
        if getattr(p, name) != FIELDS[name].default:
            raise ParamError(name, getattr(p, name), f"applies to server agent only: {p.server} "
                             "has its own workers, backlog and one listening port")
    if p.network != "bridge":
        raise ParamError("network", p.network, f"server {p.server} needs network bridge (its "
                         "clients reach it by its address)")
    if p.churn:
        raise ParamError("mode", p.mode, f"server {p.server} is measured in mode hold only")
