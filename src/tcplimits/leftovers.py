"""Containers and networks labelled tcplimits=1 left on the engine, and their removal.

A resource is removed by the automatic sweep (start of every run, `tcplimits clean`) only
when its owner is provably dead (see ownership.py); `tcplimits clean --all --yes` removes
every one, after listing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker.errors

from . import LABEL, RUN_LABEL
from .ownership import Liveness, liveness

OWNER_LABEL = "tcplimits.owner"  # ownership.Owner.label() of the process that created it
# One execution of a run: run ids repeat (the workflow's point ids), names must not.
INSTANCE_LABEL = "tcplimits.instance"


@dataclass(frozen=True)
class Leftover:
    kind: str  # "container" | "network"
    resource: object
    name: str
    run_id: str | None
    owner: Liveness

    def describe(self) -> str:
        return (f"{self.kind} {self.name} (run {self.run_id or '?'}, owner "
                f"{self.owner.value})")


def find(client, *, instance: str | None = None) -> list[Leftover]:
    """Every labelled container, then every labelled network (removal order), with its
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
            found.append(Leftover(kind, resource, names[0].lstrip("/"), labels.get(RUN_LABEL),
                                  liveness(labels.get(OWNER_LABEL))))
    return found


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


def dead(leftovers: list[Leftover]) -> list[Leftover]:
    return [item for item in leftovers if item.owner is Liveness.DEAD]
