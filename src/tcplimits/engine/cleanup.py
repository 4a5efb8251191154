"""Leftovers and signals: every resource carries its owner's identity (engine/ownership.py) and
uid, so a run that died (SIGKILL) is swept by the next, only a provably dead owner's resources
are, and `tcplimits clean --all` takes the user's own; SIGTERM, SIGHUP and SIGINT become
exceptions so cleanup always runs, and signals that arrive during cleanup wait until it is
done."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import docker.errors

from tcplimits import INSTANCE_LABEL, LABEL, OWNER_LABEL, RUN_LABEL, USER_LABEL
from tcplimits.engine import ownership
from tcplimits.engine.ownership import Liveness

# Signals that end a run: each is turned into an exception, so that cleanup runs.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def owner() -> str:
    """The OWNER_LABEL value of resources this process creates."""
    return ownership.current().label()


def owner_labels() -> dict[str, str]:
    """The labels naming who created a resource: the process, and the user."""
    return {OWNER_LABEL: owner(), USER_LABEL: str(os.getuid())}


@dataclass(frozen=True)
class Leftover:
    """A labelled container or network on the engine, and whether its owner lives."""

    kind: str  # "container" | "network"
    resource: object
    name: str
    run_id: str | None
    owner: Liveness
    uid: int | None = None  # who created it (USER_LABEL); None for an older tcplimits

    def describe(self) -> str:
        user = f", uid {self.uid}" if self.uid is not None and self.uid != os.getuid() else ""
        return (f"{self.kind} {self.name} (run {self.run_id or '?'}, owner "
                f"{self.owner.value}{user})")

    @property
    def mine(self) -> bool:
        return self.uid == os.getuid()


def find_leftovers(client, *, instance: str | None = None) -> list[Leftover]:
    """Every labelled container, then every labelled network (the order of removal), with its
    owner's liveness; only those of one run instance when ``instance`` is given."""
    filters = {"label": [f"{LABEL}=1"] + ([f"{INSTANCE_LABEL}={instance}"] if instance else [])}
    found = []
    # sparse: no inspect per container, which would race with containers being removed.
    for kind, listing in (("container", client.containers.list(all=True, sparse=True,
                                                               filters=filters)),
                          ("network", client.networks.list(filters=filters))):
        for resource in listing:
            attrs = resource.attrs
            labels = attrs.get("Labels") or attrs.get("Config", {}).get("Labels") or {}
            names = attrs.get("Names") or [attrs.get("Name") or getattr(resource, "id", "?")[:12]]
            uid = labels.get(USER_LABEL)
            found.append(Leftover(kind, resource, names[0].lstrip("/"), labels.get(RUN_LABEL),
                                  ownership.liveness(labels.get(OWNER_LABEL)),
                                  int(uid) if str(uid).isdigit() else None))
    return found


def dead(leftovers: list[Leftover]) -> list[Leftover]:
    """Those whose owner is provably dead: the only ones a sweep may remove unasked."""
    return [item for item in leftovers if item.owner is Liveness.DEAD]


def remove(leftovers: list[Leftover]) -> dict[str, int]:
    """Remove these; best effort: one another process is removing meanwhile is left to it."""
    removed = {"containers": 0, "networks": 0}
    for item in leftovers:
        try:
            if item.kind == "container":
                item.resource.remove(force=True)
            else:
                item.resource.remove()
            removed[item.kind + "s"] += 1
        except docker.errors.APIError:  # gone already, or being removed (409)
            pass
    return removed


def sweep(client, *, everything: bool = False, instance: str | None = None) -> dict[str, int]:
    """Remove containers, then networks, labelled tcplimits=1 whose owning process is provably
    dead (or all of them, or those of one run instance)."""
    found = find_leftovers(client, instance=instance)
    return remove(found if everything or instance else dead(found))


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, turned into an exception so that cleanup runs as for Ctrl-C."""


@contextmanager
def signals_raise():
    """SIGTERM and SIGHUP (a closed terminal or ssh session) raise Interrupted, as SIGINT
    raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    signal.signal(signal.SIGTERM, raise_interrupted)
    if previous[signal.SIGHUP] is not signal.SIG_IGN:  # under nohup it stays ignored
        signal.signal(signal.SIGHUP, raise_interrupted)
    try:
        yield
    finally:
        for s in previous:
            signal.signal(s, previous[s])


@contextmanager
def shielded():
    """Record SIGINT/SIGTERM/SIGHUP while cleaning up and raise afterwards, so a second Ctrl-C
    cannot leave containers behind. (Masking would not do: the kernel hands the signal to another
    thread, and Python still runs its handler in this one.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise (KeyboardInterrupt() if received[0] == signal.SIGINT
                   else Interrupted(signal.Signals(received[0]).name))
