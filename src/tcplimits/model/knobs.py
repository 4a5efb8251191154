"""The settings that bound a result, one per term of the model (pure, no I/O).

Each ``Knob`` names the setting, the model term it sets (``hold.PORTS``, ``churn.TIME_WAIT``,
a ``hostlimits`` setting), the errno a point stops with when it binds, the run parameter or
engine fact that holds its value in a run set, and how to raise it: the experiment's flag
and what an operator runs on a real host. The report's tuning table is these rows with the
run set's values; a term added to the model without a knob here fails its test.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcplimits.config.params import FIELDS
from tcplimits.model import churn, hostlimits
from tcplimits.model.hold import (CONNTRACK, DESCRIPTORS, ERRNO_OF_LIMIT, MAX_CONNECTIONS, PORTS,
                                  SERVER, SOMAXCONN)


@dataclass(frozen=True)
class Knob:
    setting: str             # what a reader tunes
    limit: str               # the model term it sets
    bounds: str              # what it bounds, in words
    errno: str | None        # what a point stops with when it binds
    columns: tuple[str, ...]  # runs.parquet columns that hold its value in a run set (none:
                             # the run's recorded host_limits)
    raise_with: str          # on a real host
    flag: str | None = None  # the experiment's own flag

    def to_dict(self) -> dict:
        return {"setting": self.setting, "limit": self.limit, "bounds": self.bounds,
                "errno": self.errno, "columns": list(self.columns),
                "raise_with": self.raise_with, "flag": self.flag}


def _flag(name: str) -> str:
    return FIELDS[name].flag


KNOBS: tuple[Knob, ...] = (
    Knob("net.ipv4.ip_local_port_range", PORTS,
         "connections per client address and destination: one ephemeral port each",
         ERRNO_OF_LIMIT[PORTS], ("port_range",),
         'sysctl -w net.ipv4.ip_local_port_range="1024 65535" (per network namespace); '
         "more destinations (server ports or addresses) multiply the pool",
         f"{_flag('port_range')} LO-HI"),
    Knob("RLIMIT_NOFILE (client)", DESCRIPTORS,
         "connections per client process: one descriptor each, after stdio",
         ERRNO_OF_LIMIT[DESCRIPTORS], ("nofile",),
         "ulimit -n, LimitNOFILE= in a systemd unit, or docker run --ulimit nofile=N:N "
         "(up to the engine's own cap)", f"{_flag('nofile')} N"),
    Knob("RLIMIT_NOFILE (server)", SERVER,
         "connections a server worker accepts: one descriptor each",
         ERRNO_OF_LIMIT[SERVER], ("server_nofile", "env_engine_nofile_cap"),
         "the same limit for the server's processes; or more worker processes",
         f"{_flag('server_nofile')} N, {_flag('server_workers')} N"),
    Knob("listen() backlog, net.core.somaxconn", SERVER,
         "connections completed but not yet accepted (the accept queue: backlog + 1, the "
         f"backlog capped at somaxconn, {SOMAXCONN:,} in a new namespace)",
         ERRNO_OF_LIMIT[SERVER], ("backlog", "somaxconn"),
         "the server's listen(backlog) and sysctl -w net.core.somaxconn=N (per namespace)",
         f"{_flag('backlog')} N"),
    Knob(hostlimits.CONNTRACK_MAX, CONNTRACK,
         "connections the host's netfilter tracks on a bridge: one entry each per tracking "
         "namespace, shared with everything else on the host",
         ERRNO_OF_LIMIT[CONNTRACK], ("env_nf_conntrack_max",),
         f"sysctl -w {hostlimits.CONNTRACK_MAX}=N; or no bridge",
         f"{_flag('network')} loopback"),
    Knob(hostlimits.FILE_MAX, hostlimits.FILE_MAX,
         "descriptors of the whole host: two per connection with both ends on it",
         "ENFILE", (), f"sysctl -w {hostlimits.FILE_MAX}=N"),
    Knob(FIELDS["tw_reuse"].sysctl, churn.TIME_WAIT,
         f"churn: a closed connection's port stays in TIME_WAIT for {churn.TIME_WAIT_S:g} s "
         "on the end that closes first, so a pool of R ports sustains R / 60 per second",
         ERRNO_OF_LIMIT[PORTS], ("tw_reuse", "closer"),
         f"sysctl -w {FIELDS['tw_reuse'].sysctl}=1 (needs TCP timestamps); or let the server "
         "close first", f"{_flag('tw_reuse')} 1"),
    Knob(FIELDS["tw_reuse_delay"].sysctl, churn.REUSE_DELAY,
         "churn with tcp_tw_reuse: how old a TIME_WAIT port must be before reuse "
         f"({churn.TW_REUSE_DELAY_S * 1000:,.0f} ms by default, Linux 6.13+)",
         ERRNO_OF_LIMIT[PORTS], ("tw_reuse_delay",),
         f"sysctl -w {FIELDS['tw_reuse_delay'].sysctl}=MS", f"{_flag('tw_reuse_delay')} MS"),
)

# Model terms that are not a setting of the host: the experiment's own bound, and churn's
# rate when nothing in the kernel binds.
NOT_SETTINGS = frozenset({MAX_CONNECTIONS, churn.RATE, churn.LOOP})


def terms() -> set[str]:
    """Every term the model can name as binding (hold, churn and the host's limits)."""
    return (set(ERRNO_OF_LIMIT) | {churn.TIME_WAIT, churn.REUSE_DELAY, churn.RATE, churn.LOOP}
            | {hostlimits.FILE_MAX})
