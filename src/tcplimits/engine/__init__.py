"""Stage 3, engine: one experiment on the Docker engine -> one run directory. A server
container and client containers on a fresh internal bridge network (or one namespace, for
loopback), clients connecting until their first failure.

    runner      run_experiment: parameters -> run directory, in named steps
    plan        what defaults became, run ids, container specs, the hardening (pure)
    experiment  one run's resources and lifecycle steps (``Experiment``)
    teardown    stopping the agents, removing what the run made, waiting out its sockets
    events      following container output, the agents' events, the run's state
    record      the run's table rows, environment, and writing the run directory
    compose     the run's compose.yml, to reproduce it by hand (pure)
    probe       engine facts: versions, conntrack room, the nofile cap (cached)
    cleanup     owner labels, sweeping leftovers of dead runs, SIGINT/SIGTERM handling
    addresses   extra server/client addresses, added by a one-shot NET_ADMIN helper
    nat         topology gateway: the NAT router, the clients' routes, its counters
    ownership   who made a resource (host, pid namespace, pid) and whether it still lives
    outdir      the run directory prepared before any container: writable, room, --force
    faults      what kind of fault failed a run, and the exit codes
    host        the host's TCP state, waiting for a quiet host, a namespace's sockets
    footprint   memory per connection, the host's facts and limits read from /proc
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
