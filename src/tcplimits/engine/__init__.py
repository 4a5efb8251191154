"""Run experiments on the Docker engine: a server container and client containers on a fresh
internal bridge network, clients connecting until their first failure.

    plan        what defaults became, run ids, container specs, the hardening (pure)
    compose     the run's compose.yml, to reproduce it by hand (pure)
    probe       engine facts: versions, conntrack room, the nofile cap (cached)
    cleanup     owner labels, sweeping leftovers of dead runs, SIGINT/SIGTERM handling
    events      following container output, the agents' events, the run's state
    experiment  one run's resources and lifecycle steps (``Experiment``)
    record      the run's table rows, environment, and writing the run directory
    runner      run_experiment: parameters -> run directory
"""

from tcplimits.engine.cleanup import Interrupted, sweep
from tcplimits.engine.compose import compose_file, compose_project
from tcplimits.engine.experiment import Experiment, RunFailed
from tcplimits.engine.plan import (HARDENING, Resolved, container_specs, new_run_id,
    unsupported_reason)
from tcplimits.engine.probe import probe_engine
from tcplimits.engine.runner import run_experiment

__all__ = ["HARDENING", "Experiment", "Interrupted", "Resolved", "RunFailed", "compose_file",
           "compose_project", "container_specs", "new_run_id", "probe_engine", "run_experiment",
           "sweep", "unsupported_reason"]
