"""What the agents may say: each JSON event's fields and their types, checked before the
controller takes it (engine/events.py RunState.take).

An event is the word of a process inside a container, and containers run code the controller
does not control (a changed image, a crash mid-write, an agent of another version): a field
missing or of the wrong type must fail the run with a reason and a run.json, not a traceback;
and a client container speaks for its own number only (client3 cannot report for client 5).
Events of a kind this version does not know are ignored, as before.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Check = Callable[[Any], bool]


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return _int(value) and value >= 0


def _positive(value: Any) -> bool:
    return _int(value) and value >= 1


def _number(value: Any) -> bool:
    return (_int(value) or isinstance(value, float)) and math.isfinite(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _maybe(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _held(value: Any) -> bool:
    """The ready event's sockets held at start: [{addr, port, state}, ...]."""
    return isinstance(value, list) and all(
        isinstance(s, dict) and _count(s.get("port")) and _maybe(_text)(s.get("addr"))
        for s in value)


def _pairs(value: Any) -> bool:
    """[source, server address, server port, connections, error] per pair."""
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 5 and _maybe(_text)(p[0]) and _text(p[1])
        and _count(p[2]) and _count(p[3]) and _maybe(_text)(p[4]) for p in value)


_PROC = {"proc": _positive}
_OUTCOME = {"errno": _maybe(_int), "error": _maybe(_text), "message": _maybe(_text)}
# role -> event -> field -> check; "client" is checked against the container's own number.
FIELDS: dict[str, dict[str, dict[str, Check]]] = {
    "client": {
        "ready": {"held": _held},
        "progress": {**_PROC, "connections": _count, "t_s": _maybe(_number),
                     "connect_latency_s": _maybe(_number)},
        "result": {**_PROC, "connections": _count, **_OUTCOME, "elapsed_s": _maybe(_number),
                   "cpu_s": _maybe(_number), "started_at": _maybe(_number)},
        "churn": {**_PROC, "second": _number, "opened": _count, "errors": _count,
                  "error": _maybe(_text), "connect_latency_s": _maybe(_number)},
        "pairs": {**_PROC, "pairs": _pairs},
        "worker_exit": {"pid": _int, "code": _int},
        "time_wait": {"at": _number, "time_wait": _count},
    },
    "server": {
        "listening": {"somaxconn": _maybe(_count)},
        # worker 0: a real server's count as a whole (agents/realserver.py), else 1, 2, ...
        "progress": {"worker": _count, "accepted": _count},
        "result": {"worker": _count, "accepted": _count, **_OUTCOME,
                   "accept_errors": _maybe(_count), "conntrack": _maybe(_count),
                   "listen_drops": _maybe(_count)},
        "worker_exit": {"pid": _int, "code": _int, "worker": _maybe(_positive)},
        "time_wait": {"at": _number, "time_wait": _count},
    },
}
# Fields that only appear in the client's events and name its container.
CLIENT_EVENTS_WITH_NUMBER = ("ready", "progress", "result", "churn", "pairs")


def problem(role: str, event: dict) -> str | None:
    """Why ``event`` from ``role``'s container ("server", "client3") cannot be taken, or None."""
    kind = event.get("event")
    side = "server" if role == "server" else "client"
    fields = FIELDS[side].get(kind) if isinstance(kind, str) else None
    if fields is None:
        return None  # a kind this version does not read
    for name, check in fields.items():
        if not check(event.get(name)):
            value = repr(event.get(name)) if name in event else "missing"
            return f"{kind} event: {name} is {value[:80]}"
    if side == "client" and (kind in CLIENT_EVENTS_WITH_NUMBER or "client" in event):
        own = role[len("client"):]
        if not (_int(event.get("client")) and str(event["client"]) == own):
            return (f"{kind} event: client is {event.get('client')!r:.40}, but it came from "
                    f"client {own}'s container")
    return None
