"""The parameters of one experiment: one typed object, validated before any container starts.

Every field is a flag of `tcplimits run` (``--port-range`` for ``port_range``) and a key a
workflow grid point may set. Adding a dimension means adding one entry to ``FIELDS`` and a
field to ``RunParams`` whose default is ``_default(name)``; the CLI, the config schema and
the point ids follow from them.
"""

from __future__ import annotations

import dataclasses
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
    kind: str  # "int", "float", "port_range", "workers", "choice"
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None allowed (means "not bounded" / "resolved at run time")
    choices: tuple[str, ...] = ()  # the values a "choice" field accepts

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
        Field("backlog", "int", 128, "backlog passed to listen() (capped by net.core.somaxconn)",
              0, 65535),
        Field("max_connections", "int", None,
              "optional bound on connections per client process", 1, NOFILE_MAX, optional=True),
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
        # A quiet host before connecting (tcplimits.host): bounds on the run, not physics.
        Field("quiet_host_timeout", "float", 60.0,
              "seconds to wait, before connecting, for the host's closed sockets (orphans + "
              "TIME-WAIT) to drain to quiet_host_sockets; past it the point runs, marked "
              "noisy",
              0, 3600),
        Field("quiet_host_sockets", "int", 1000,
              "closed sockets (orphans + TIME-WAIT) the host may hold for a point to count "
              "as quiet", 0, 10_000_000),
    ]
}


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
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
        if field.optional:
            return None
        raise ParamError(key, value, "a value is required")
    if field.kind == "port_range":
        lo, hi = parse_port_range(value, key)
        return f"{lo}-{hi}"
    if field.kind == "workers" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if field.kind == "choice":
        if not isinstance(value, str) or value.strip().lower() not in field.choices:
            raise ParamError(key, value, f"expected one of {', '.join(field.choices)}")
        return value.strip().lower()
    if isinstance(value, bool):
        raise ParamError(key, value, "expected a number, not a boolean")
    if field.kind in ("int", "workers"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            if not re.fullmatch(r"\s*[+-]?\d+\s*", value):
                extra = " or 'auto'" if field.kind == "workers" else ""
                raise ParamError(key, value, f"expected an integer{extra}")
            value = int(value)
        if not isinstance(value, int):
            raise ParamError(key, value, "expected an integer")
    else:  # float
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParamError(key, value, "expected a number of seconds") from None
        if not isinstance(value, (int, float)):
            raise ParamError(key, value, "expected a number")
        value = float(value)
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
    connect_timeout: float = _default("connect_timeout")
    timeout: float = _default("timeout")
    network: str = _default("network")
    quiet_host_timeout: float = _default("quiet_host_timeout")
    quiet_host_sockets: int = _default("quiet_host_sockets")

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
        return cls(**out)

    def __post_init__(self) -> None:
        # Direct construction validates too, so no unchecked object exists.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(FIELDS[f.name], value, f.name)
            if coerced != value or type(coerced) is not type(value):
                object.__setattr__(self, f.name, coerced)

    @property
    def port_lo(self) -> int:
        return parse_port_range(self.port_range)[0]

    @property
    def port_hi(self) -> int:
        return parse_port_range(self.port_range)[1]

    @property
    def port_count(self) -> int:
        return port_count(self.port_range)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_args(self) -> list[str]:
        """The `tcplimits run` flags that reproduce these parameters."""
        args = []
        for name, value in self.to_dict().items():
            if value is not None:
                args += [FIELDS[name].flag, str(value)]
        return args
