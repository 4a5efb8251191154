"""The parameters of one experiment: one typed object, validated before any container starts.

Every field is a flag of `tcplimits run` (``--port-range`` for ``port_range``) and a key a
workflow grid point may set. Adding a dimension means adding one entry to ``FIELDS``
(config/fields.py) and a field to ``RunParams`` whose default is ``_default(name)``; the CLI,
the config schema and the point ids follow from them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from tcplimits.config.fields import (  # noqa: F401  (re-exported: callers import them from params)
    BIND_MODES, CHURN_ONLY, CLOSERS, FIELDS, Field, KERNEL_DEFAULT_PORT_RANGE, MODES, NATS,
    NAT_ADDRS_MAX, NAT_ONLY, NAT_PORT_MIN, NAT_RANDOM, NETWORKS, NGINX_SERVERS, NOFILE_MAX,
    PAIRS_MAX, PORT_MAX, PORT_MIN, SERVERS, TUPLE_MAX)

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




# Measured on Docker 20.10.24 (issue 16): a port published (bound to 127.0.0.1) by a container
# attached only to an internal network is accepted and silently ignored: no DNAT rule, no
# docker-proxy, no HostPort. On a plain bridge the same container gets both (this engine runs
# the userland proxy: dockerd has no userland-proxy setting, so true).
PUBLISHED_REFUSAL = (
    "topology published cannot run here: every network tcplimits creates is internal and "
    "publishes nothing, and Docker publishes no port of a container on an internal network "
    "(measured on Docker 20.10.24: the binding is accepted and ignored, no DNAT rule, no "
    "docker-proxy); clients on an internal network cannot reach the host's published ports "
    "either. Use nat: gateway (a NAT router on the run's internal network)")


def _check_nat(params: "RunParams") -> None:
    """Combinations the NAT path cannot run, refused with the reason."""
    if params.nat == "published":
        raise ParamError("nat", params.nat, PUBLISHED_REFUSAL)
    if params.nat == "none":
        for name in NAT_ONLY:
            if getattr(params, name) != FIELDS[name].default:
                raise ParamError(name, getattr(params, name), "applies to nat gateway only "
                                 "(set nat: gateway, or leave it out)")
        return
    if params.network != "bridge":
        raise ParamError("nat", params.nat, "needs network bridge (the router shares the "
                         "run's bridge network; loopback has no route to translate)")


def parse_port_range(value: Any, key: str = "port_range",
                     minimum: int = PORT_MIN) -> tuple[int, int]:
    """'32768-60999' (or '32768 60999', or a 2-sequence) -> (32768, 60999), validated. A range
    no socket binds (nat_port_range: the NAT's) may start below PORT_MIN, at ``minimum``."""
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
    if lo < minimum:
        raise ParamError(key, value,
                         f"low end {lo} is below {minimum} (ip_unprivileged_port_start; "
                         "a container refuses it)" if minimum == PORT_MIN else
                         f"low end {lo} is below {minimum}")
    if hi > PORT_MAX:
        raise ParamError(key, value, f"high end {hi} is above {PORT_MAX}")
    return lo, hi


def port_minimum(field: Field) -> int:
    """The lowest port a port_range field takes: PORT_MIN unless the field says lower."""
    return PORT_MIN if field.minimum is None else int(field.minimum)


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
        lo, hi = parse_port_range(value, key, port_minimum(field))
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
