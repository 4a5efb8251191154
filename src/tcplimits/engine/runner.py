"""run_experiment: one experiment from parameters to a complete run directory, in five steps:
the engine's preflight, the refusals (a point the engine or the host cannot run), the
lifecycle on the engine, the record's assembly (engine.record), and the writing."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from tcplimits import model, results
from tcplimits.config.params import RunParams
from tcplimits.engine import faults, footprint, host, servers
from tcplimits.engine.cleanup import Interrupted, signals_raise, sweep
from tcplimits.engine.compose import compose_file
from tcplimits.engine.events import Log, stderr_log
from tcplimits.engine.experiment import Experiment, RunFailed, bad_output_reason
from tcplimits.engine.plan import Resolved, new_run_id, unsupported_reason
from tcplimits.engine.probe import probe_engine
from tcplimits.engine.record import (RunTables, assemble, close_record, environment, new_record,
                                     write_run)
from tcplimits.model import ceiling, hostlimits


@dataclass(frozen=True)
class Preflight:
    """What the run needs of the engine before its first container."""

    client: Any                 # docker.DockerClient
    image: Any                  # the agent image (docker Image)
    facts: dict[str, Any]       # the engine's facts (probe_engine)
    local_host: bool            # the engine's host is this machine: its /proc is read
    removed: dict[str, int]     # leftovers of earlier runs swept away


@dataclass(frozen=True)
class Outcome:
    """How the lifecycle on the engine ended."""

    status: str
    reason: str | None
    fault: str | None
    addresses: dict[int, str]   # client number -> its address, for the clients that existed
    interrupted: BaseException | None


def run_experiment(params: RunParams, out_dir: Path, *, run_id: str | None = None,
                   progress: bool = True, client=None, log: Log = stderr_log) -> dict[str, Any]:
    """Run one experiment and write its run directory; returns the run.json record.
    ``progress`` shows a live count on stderr while clients connect. SIGTERM and SIGHUP
    raise from the start (image build, probe, sweep), not only inside the experiment."""
    with signals_raise():
        return _run(params, Path(out_dir), run_id, progress, client, log)


def _run(params: RunParams, out_dir: Path, run_id: str | None, progress: bool, client,
         log: Log) -> dict[str, Any]:
    run_id = run_id or new_run_id(params)
    out_dir = Path(out_dir)
    record = new_record(run_id, params)
    started = time.monotonic()
    try:
        pre = preflight(client, log)
        server_image = servers.image_for(params, pre.client, log)  # real servers (issue 21)
    except Exception as err:
        if not faults.is_engine_gone(err):
            raise
        return _write_stopped(out_dir, close_record(
            record, started, status=results.STATUS_FAILED,
            reason=faults.unreachable_reason(err), fault=faults.ENGINE_UNREACHABLE))
    params, resolved, host_facts, refused = plan_on_host(params, record, pre)
    if refused:
        return _write_stopped(out_dir, close_record(
            record, started, status=results.STATUS_UNSUPPORTED, reason=refused))
    if any(pre.removed.values()):
        log(f"removed leftovers of earlier runs: {pre.removed['containers']} container(s), "
            f"{pre.removed['networks']} network(s)")
    log(f"run {run_id}: {params.clients} client(s) x {params.procs} process(es), port range "
        f"{params.port_range} ({params.port_count:,} ports), nofile {params.nofile:,}; server "
        + (f"{params.server}, nofile {resolved.server_nofile:,}" if params.real_server else
           f"{resolved.server_workers} worker(s) x nofile {resolved.server_nofile:,}"))
    experiment = Experiment(pre.client, params, resolved, run_id, pre.image.tags[0], log=log,
                            live=progress, local_host=pre.local_host)
    if server_image:  # nginx, nginx-proxy or Redis instead of the agent server
        servers.prepare(experiment, server_image, pre.client.info().get("NCPU") or 1)
    outcome = lifecycle(experiment)
    tables = assemble(record, experiment, engine=pre.facts, host_facts=host_facts,
                      status=outcome.status, reason=outcome.reason, fault=outcome.fault,
                      addresses=outcome.addresses, started=started)
    servers.complete(record, experiment, tables.clients)
    _write_run(out_dir, record, experiment, tables)
    if outcome.interrupted is not None:
        raise KeyboardInterrupt from outcome.interrupted
    return record


def preflight(client, log: Log) -> Preflight:
    """The engine, the agent image (built if missing), the engine's facts, and no leftovers
    of earlier runs. An unreachable engine raises (faults.is_engine_gone says so)."""
    from tcplimits.image import ensure_image

    client = client or docker.from_env()
    image = ensure_image(client, log=log)
    facts = probe_engine(client, image=image.id, log=log)
    local_host = host.engine_is_local(client.api.base_url)
    return Preflight(client, image, facts, local_host, sweep(client))


def plan_on_host(params: RunParams, record: dict[str, Any], pre: Preflight
                 ) -> tuple[RunParams, Resolved, dict | None, str | None]:
    """The parameters to run (``connections`` resolved on this host), the server's resolved
    size on this engine, the host's facts, and why the point cannot run here (None: it can);
    what they are goes into ``record``."""
    record["environment"] = environment(pre.facts, pre.image)
    record["host_tcp"] = {"before": host.read_state(pre.local_host)}
    cap = pre.facts["engine_nofile_cap"]
    host_facts = footprint.host_facts() if pre.local_host else None
    unresolved = None
    try:  # connections: N or "ceiling" becomes a number and each process's share (issue 22)
        params, record["ceiling"] = ceiling.resolve(params, host_facts, cap)
        record["params"] = params.to_dict()
    except ceiling.CeilingError as err:
        unresolved = str(err)
    resolved = Resolved.of(params, cap)
    record["resolved"] = asdict(resolved)
    demand = model.predict(params, server_nofile=resolved.server_nofile,
                           server_workers=resolved.server_workers).total
    limits = (hostlimits.host_limits(params, host_facts, demand, resolved.server_workers)
              if host_facts else [])
    record.update(host=host_facts, host_limits=[lim.to_dict() for lim in limits])
    return (params, resolved, host_facts, unresolved
            or unsupported_reason(params, cap, resolved) or hostlimits.refusal(limits))


def lifecycle(experiment: Experiment) -> Outcome:
    """Every step of the run on the engine, then the teardown (the context manager's exit),
    whatever happened: the outcome, never an exception of the run's own (an interruption is
    kept in the outcome, to raise once the run directory is written)."""
    interrupted: BaseException | None = None
    addresses: dict[int, str] = {}
    fault: str | None = None
    try:
        with signals_raise(), experiment:
            try:
                _steps(experiment)
                status, reason = results.STATUS_OK, None
            except RunFailed as err:
                status, reason, fault = results.STATUS_FAILED, str(err), err.fault
            except docker.errors.APIError as err:
                status, reason = results.STATUS_FAILED, f"Docker engine error: {err}"
            except Exception as err:
                if not faults.is_engine_gone(err):
                    raise
                status, reason, fault = (results.STATUS_FAILED, faults.lost_reason(err),
                                         faults.ENGINE_LOST)
            finally:
                if fault != faults.ENGINE_LOST:  # nat gateway stopped its clients: it kept them
                    addresses = experiment.nat.client_addrs or experiment.client_addresses()
                experiment.drain(0.05)
    except (KeyboardInterrupt, Interrupted) as err:
        interrupted = err
        status, reason = results.STATUS_FAILED, f"interrupted ({type(err).__name__} {err})".strip()
    if experiment.state.bad and status == results.STATUS_OK:  # refused after the last check
        status, reason, fault = (results.STATUS_FAILED, bad_output_reason(experiment.state.bad),
                                 faults.AGENT_OUTPUT)
    if experiment.left_behind:
        reason = (f"{reason}; the engine did not come back, so "
                  f"{len(experiment.left_behind)} resource(s) of the run are still on it: the "
                  "next run or `tcplimits clean` removes them")
    return Outcome(status, reason, fault, addresses, interrupted)


def _steps(experiment: Experiment) -> None:
    """The run's steps in order, the footprint measured before connecting and once held."""
    experiment.create_network()
    experiment.start_server()
    experiment.add_server_addresses()
    experiment.nat.setup()  # nat gateway's steps (engine.nat): no-ops with nat none
    experiment.start_clients()
    experiment.add_client_addresses()
    experiment.nat.add_routes()
    experiment.wait_quiet()
    experiment.measure("before")
    experiment.nat.snapshot("before")
    experiment.start_connecting()
    experiment.wait_for_clients()
    if experiment.params.churn:
        experiment.wait_for_duration()
    else:
        experiment.measure("held")
    experiment.nat.held()
    experiment.collect_server()
    experiment.nat.finish()


def _write_stopped(out_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The run directory of a run that never started its containers: run.json, empty tables."""
    write_run(out_dir, record, [], [], [], compose=None)
    return record


def _write_run(out_dir: Path, record: dict[str, Any], experiment: Experiment,
               tables: RunTables) -> None:
    """The run directory: the tables, the compose file of what ran, the logs, run.json."""
    write_run(out_dir, record, tables.clients, tables.server, tables.series,
              compose=servers.fix_compose(compose_file(
                  experiment.specs, experiment.run_id, address_plan=experiment.address_plan,
                  addresses=experiment.addresses, bind_mode=experiment.params.bind_mode,
                  router=experiment.nat.compose_router()),
                  experiment.params),
              destinations=tables.destinations, save_logs=experiment.save_logs,
              churn=tables.churn, realserver=servers.rows(record))
