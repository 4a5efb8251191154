"""Leftovers and signals: every resource carries its owner's host and pid, so a run that died
(SIGKILL) is swept by the next; SIGTERM and SIGINT become exceptions so cleanup always runs,
and signals that arrive during cleanup wait until it is done."""

from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import contextmanager

import docker.errors

from .. import LABEL
from .plan import INSTANCE_LABEL, OWNER_LABEL


def owner() -> str:
    """The OWNER_LABEL value of resources this process creates."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Is the process that created a resource still running? Resources without an owner, or
    owned from another host, are not ours to judge: they count as alive."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(client, *, everything: bool = False, instance: str | None = None) -> dict[str, int]:
    """Remove containers, then networks, labelled tcplimits=1 whose owning process is gone
    (or all of them, or those of one run instance). Best effort: a resource another process
    is removing at the same moment is left to it."""
    filters = {"label": [f"{LABEL}=1"] + ([f"{INSTANCE_LABEL}={instance}"] if instance else [])}
    removed = {"containers": 0, "networks": 0}
    # sparse: no inspect per container, which would race with containers being removed.
    for kind, listing in (("containers", lambda: client.containers.list(all=True, sparse=True,
                                                                        filters=filters)),
                          ("networks", lambda: client.networks.list(filters=filters))):
        for resource in listing():
            labels = resource.attrs.get("Labels") or resource.attrs.get("Config", {}).get("Labels") or {}
            if not (everything or instance or not owner_alive(labels.get(OWNER_LABEL))):
                continue
            try:
                resource.remove(force=True) if kind == "containers" else resource.remove()
                removed[kind] += 1
            except docker.errors.APIError:  # gone already, or being removed (409)
                pass
    return removed


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that cleanup runs as for Ctrl-C."""


@contextmanager
def signals_raise():
    """SIGTERM raises Interrupted, as SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        for s in previous:
            signal.signal(s, previous[s])


@contextmanager
def shielded():
    """Record SIGINT/SIGTERM while cleaning up and raise afterwards, so a second Ctrl-C cannot
    leave containers behind. (Masking would not do: the kernel hands the signal to another
    thread, and Python still runs its handler in this one.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise (KeyboardInterrupt() if received[0] == signal.SIGINT
                   else Interrupted(signal.Signals(received[0]).name))
