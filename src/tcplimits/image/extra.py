"""The images besides the agent image that some points need, built ahead of the runs by
`tcplimits image --router / --servers / --all` (and the workflow's image job), so that no
timed run builds one: the NAT router's (nat gateway, tcplimits.image.router) and the real
servers' (server nginx, nginx-proxy, redis; tcplimits.image.servers). Each is cached by its
content tag: asking again costs a lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

from tcplimits.config.params import RunParams

ROUTER = "router"
SERVERS = "servers"
EXTRA = (ROUTER, SERVERS)  # in the order they are built and printed


def needed(points: Iterable[RunParams]) -> list[str]:
    """The extra images these points run on, in EXTRA's order."""
    found = set()
    for params in points:
        if params.gateway:
            found.add(ROUTER)
        if params.real_server:
            found.add(SERVERS)
    return [name for name in EXTRA if name in found]


def flags(names: Iterable[str]) -> str:
    """`tcplimits image`'s flags that build ``names`` ("" for none)."""
    names = set(names)
    return " ".join(f"--{name}" for name in EXTRA if name in names)


def ensure(client, name: str, *, log=print):
    """One extra image, built if missing (after the agent image it needs)."""
    if name == ROUTER:
        from tcplimits.image.router import ensure_router_image

        return ensure_router_image(client, log=log)
    if name == SERVERS:
        from tcplimits.image.servers import ensure_server_image

        return ensure_server_image(client, log=log)
    raise ValueError(f"no extra image named {name!r} (known: {', '.join(EXTRA)})")
