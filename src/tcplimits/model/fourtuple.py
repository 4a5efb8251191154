"""The 4-tuple, member by member (pure, no I/O): how many connections one client container's
ports allow, given its source addresses, the server's addresses and ports, and how the
client gets its source port.

A connection is (source address, source port, destination address, destination port). What
the kernel lets a client reuse depends on when the source port is chosen (measured on this
machine; see shared/docs/limits.md and tests/test_fourtuple_engine.py):

- ``connect``: plain connect() picks a port free *for that destination* (the 4-tuple must
  be unique, not the port), so every destination gets the whole pool. The route picks the
  source address: extra source addresses are never used. Stops with EADDRNOTAVAIL.
- ``bind``: bind((addr, 0)) picks the port before the destination is known, among ports no
  socket on that address holds: each source address has one pool, shared by every
  destination. Stops with EADDRINUSE, at bind().
- ``bind-no-port``: bind() with IP_BIND_ADDRESS_NO_PORT fixes the address and leaves the
  port to connect(): every (source address, destination) pair gets the whole pool. Stops
  with EADDRNOTAVAIL, at connect().

Ports already held in the namespace (a listener, like Docker's DNS resolver on 127.0.0.11):
connect() skips every port some socket holds by bind(), whatever its address, so each one
costs every pair one connection. bind((addr, 0)) only conflicts with sockets bound to the
same address or the wildcard: a port held on another address (127.0.0.11) costs nothing.

Spreading is deterministic: each client process walks the pairs (source, destination) in
``pairs`` order, round-robin, starting at pair (proc - 1); a pair whose pool runs out
(EADDRNOTAVAIL, EADDRINUSE) is dropped and the others go on, so the process stops when every
pair is exhausted or at the first other error. With one pair this is the classic "connect
until the first failure".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CONNECT = "connect"
BIND = "bind"
BIND_NO_PORT = "bind-no-port"

# The errno that ends a pool, per mode, and the call that returns it.
POOL_ERRNO = {CONNECT: "EADDRNOTAVAIL", BIND: "EADDRINUSE", BIND_NO_PORT: "EADDRNOTAVAIL"}
POOL_CALL = {CONNECT: "connect", BIND: "bind", BIND_NO_PORT: "connect"}
WILDCARDS = frozenset({"0.0.0.0", "::", ""})

# Ports the server listens on: SERVER_PORT, SERVER_PORT + 1, ...
FIRST_SERVER_PORT = 5000


def server_ports(count: int, first: int = FIRST_SERVER_PORT) -> list[int]:
    return list(range(first, first + count))


def sources_used(bind_mode: str, client_addrs: int) -> int:
    """Source addresses a client's connections actually leave from."""
    return 1 if bind_mode == CONNECT else client_addrs


def pools(bind_mode: str, server_addrs: int = 1, server_ports: int = 1,
          client_addrs: int = 1) -> int:
    """Independent port pools one client container draws from: one per destination with
    connect(), one per source address with bind(), one per (source, destination) pair with
    bind-no-port. port_capacity() is this times one pool's free ports."""
    if bind_mode == BIND:
        return client_addrs
    return server_addrs * server_ports * sources_used(bind_mode, client_addrs)


def pairs(sources: Sequence[str], server_addrs: Sequence[str],
          ports: Sequence[int], bind_mode: str) -> list[tuple[str | None, str, int]]:
    """(source address, destination address, destination port) a process spreads over, in
    order. With plain connect() the source is None: the route picks it."""
    used = [None] if bind_mode == CONNECT else list(sources)
    return [(s, a, p) for s in used for a in server_addrs for p in ports]


def held_from_counts(bind_mode: str, held_ports: int, held_other_addr: int = 0) -> int:
    """held_cost from the dataset's counts: ports of the range held in the namespace, and how
    many of them are bound to a specific address no client socket leaves from."""
    return held_ports - (held_other_addr if bind_mode == BIND else 0)


def held_cost(bind_mode: str, held: Iterable[Mapping[str, Any]] | int,
              source: str | None = None) -> int:
    """Ports of the range one (source, destination) pair loses to sockets already bound in
    the namespace. ``held``: those sockets ({"addr", "port"}), or a bare count (then every
    one is taken to cost, as connect() sees it)."""
    if isinstance(held, int):
        return held
    ports = set()
    for sock in held:
        addr = sock.get("addr") or ""
        if bind_mode != BIND or addr in WILDCARDS or addr == source:
            ports.add(sock["port"])
    return len(ports)


def port_capacity(port_count: int, bind_mode: str, *, server_addrs: int = 1,
                  server_ports: int = 1, client_addrs: int = 1,
                  held: Iterable[Mapping[str, Any]] | int = 0,
                  sources: Sequence[str] | None = None) -> int:
    """Connections one client container's ports allow (all its processes together).

    ``sources``: the container's source addresses, when known; a held port bound to one of
    them costs that address's pool in ``bind`` mode (the agents never bind one at start)."""
    held = held if isinstance(held, int) else list(held)
    destinations = server_addrs * server_ports
    n_sources = sources_used(bind_mode, client_addrs)
    names: list[str | None] = list(sources or [])[:n_sources]
    names += [None] * (n_sources - len(names))
    if bind_mode == CONNECT:
        return destinations * max(0, port_count - held_cost(CONNECT, held))
    if bind_mode == BIND:
        return sum(max(0, port_count - held_cost(BIND, held, s)) for s in names)
    return destinations * sum(max(0, port_count - held_cost(BIND_NO_PORT, held, s))
                              for s in names)


def space(port_count: int, server_addrs: int = 1, server_ports: int = 1) -> int:
    """The 4-tuple space of one client address: pool x server ports x server addresses."""
    return port_count * server_addrs * server_ports


def pools_phrase(bind_mode: str, server_addrs: int = 1, server_ports: int = 1,
                 client_addrs: int = 1) -> str:
    """How many times a client's pool counts, in words ("" for the classic one pool)."""
    destinations = server_addrs * server_ports
    pairs = f"{destinations} destinations (server address, port)"
    if bind_mode == CONNECT:
        out = f", once for each of {pairs}" if destinations > 1 else ""
        if client_addrs > 1:
            out += (f"; plain connect() leaves from one source address, whatever the "
                    f"{client_addrs} it has")
        return out
    if bind_mode == BIND:
        return (f", once per source address ({client_addrs}): bind((addr, 0)) picks the port "
                f"before the destination is known, so the "
                f"{'destination shares' if destinations == 1 else pairs + ' share'} it")
    return (f", once per (source address, destination) pair: {client_addrs} x {destinations}"
            if client_addrs * destinations > 1 else "")

