"""Helpers shared by the engine's tests."""

import uuid

from tcplimits import LABEL, RUN_LABEL
from tcplimits.config.params import RunParams
from tcplimits.engine import run_experiment


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


def run_ok(engine, run_dir, **values) -> dict:
    """One run of ``values`` into ``run_dir`` under a run id of its own; it must finish ok and
    leave none of its containers or its network behind. Returns its record."""
    record = run_experiment(RunParams.from_mapping(values), run_dir, run_id=unique_id(run_dir.name),
                            progress=False, client=engine, log=lambda m: None)
    assert record["status"] == "ok", record["reason"]
    assert labelled(engine, record["run_id"]) == ([], []), \
        "the run left containers or its network behind"
    return record
