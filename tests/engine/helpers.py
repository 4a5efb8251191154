"""Helpers shared by the engine's tests."""

import uuid

from tcplimits import LABEL, RUN_LABEL


def unique_id(name: str) -> str:
    """A run id of its own: other checkouts may run the same test on this engine at once, and
    a run's containers are named after its id."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


def labelled(engine, run_id=None):
    """(container ids, network ids) carrying the project's label (and the run's, if given)."""
    label = [f"{LABEL}=1"] + ([f"{RUN_LABEL}={run_id}"] if run_id else [])
    # sparse: listing must not inspect containers that a run is removing meanwhile.
    return ([c.id for c in engine.containers.list(all=True, sparse=True,
                                                  filters={"label": label})],
            [n.id for n in engine.networks.list(filters={"label": label})])
