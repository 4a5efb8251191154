"""Helpers shared by the engine's tests."""

from tcplimits import LABEL, RUN_LABEL


def labelled(engine, run_id=None):
    """(container ids, network ids) carrying the project's label (and the run's, if given)."""
    label = [f"{LABEL}=1"] + ([f"{RUN_LABEL}={run_id}"] if run_id else [])
    # sparse: listing must not inspect containers that a run is removing meanwhile.
    return ([c.id for c in engine.containers.list(all=True, sparse=True,
                                                  filters={"label": label})],
            [n.id for n in engine.networks.list(filters={"label": label})])
