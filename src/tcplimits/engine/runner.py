"""run_experiment: one experiment from parameters to a complete run directory."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker
import docker.errors

from tcplimits.model import churn as churn_model, hostlimits
from tcplimits.engine import faults, footprint, host
from tcplimits import model, results
from tcplimits.config.params import RunParams
from tcplimits.engine.cleanup import Interrupted, signals_raise, sweep
from tcplimits.engine.compose import compose_file
from tcplimits.engine.events import Log, stderr_log
from tcplimits.engine.experiment import Experiment, RunFailed
from tcplimits.engine.plan import Resolved, new_run_id, unsupported_reason
from tcplimits.engine.probe import probe_engine
from tcplimits.engine.record import (churn_rows, client_rows, destination_rows, environment,
    footprint_record, now, run_facts, series_rows, server_rows, tuple_record, write_run)


def run_experiment(params: RunParams, out_dir: Path, *, run_id: str | None = None,
                   progress: bool = True, client=None, log: Log = stderr_log) -> dict[str, Any]:
    """Run one experiment and write its run directory; returns the run.json record.
    ``progress`` shows a live count on stderr while clients connect."""
    from tcplimits.image import ensure_image

    run_id = run_id or new_run_id(params)
    out_dir = Path(out_dir)
    started = now()
    t0 = time.monotonic()
    record: dict[str, Any] = {
        "run_id": run_id, "status": None, "reason": None, "fault": None,
        "params": params.to_dict(), "resolved": None, "prediction": None,
        "started_at": started, "ended_at": None, "duration_s": None, "setup_s": None,
        "quiet_wait_s": None, "connect_s": None, "teardown_s": None, "noisy": None,
        "noisy_reason": None, "environment": None, "totals": None, "held_ports": None,
        "facts": {},  # what the engine measured; tcplimits.model explains from it
        "host_tcp": None,
    }
    try:
        client = client or docker.from_env()
        image = ensure_image(client, log=log)
        engine = probe_engine(client, image=image.id, log=log)
        local_host = host.engine_is_local(client.api.base_url)
        removed = sweep(client)
    except Exception as err:
        if not faults.is_engine_gone(err):
            raise
        record.update(status=results.STATUS_FAILED, reason=faults.unreachable_reason(err),
                      fault=faults.ENGINE_UNREACHABLE, ended_at=now(),
                      duration_s=round(time.monotonic() - t0, 3))
        write_run(out_dir, record, [], [], [], compose=None)
        return record
    record["environment"] = environment(engine, image)
    record["host_tcp"] = {"before": host.read_state(local_host)}
    cap = engine["engine_nofile_cap"]
    resolved = Resolved.of(params, cap)
    record["resolved"] = asdict(resolved)
    host_facts = footprint.host_facts() if local_host else None
    demand = model.predict(params, server_nofile=resolved.server_nofile,
                           server_workers=resolved.server_workers).total
    limits = (hostlimits.host_limits(params, host_facts, demand, resolved.server_workers)
              if host_facts else [])
    record.update(host=host_facts, host_limits=[lim.to_dict() for lim in limits])
    reason = unsupported_reason(params, cap, resolved) or hostlimits.refusal(limits)
    if reason:
        record.update(status=results.STATUS_UNSUPPORTED, reason=reason, ended_at=now(),
                      duration_s=round(time.monotonic() - t0, 3))
        write_run(out_dir, record, [], [], [], compose=None)
        return record
    if any(removed.values()):
        log(f"removed leftovers of earlier runs: {removed['containers']} container(s), "
            f"{removed['networks']} network(s)")
    log(f"run {run_id}: {params.clients} client(s) x {params.procs} process(es), port range "
        f"{params.port_range} ({params.port_count:,} ports), nofile {params.nofile:,}; server "
        f"{resolved.server_workers} worker(s) x nofile {resolved.server_nofile:,}")
    interrupted: BaseException | None = None
    experiment = Experiment(client, params, resolved, run_id, image.tags[0], log=log,
                            live=progress, local_host=local_host)
    addresses: dict[int, str] = {}
    fault: str | None = None
    try:
        with signals_raise(), experiment:
            try:
                experiment.create_network()
                experiment.start_server()
                experiment.add_server_addresses()
                experiment.start_clients()
                experiment.add_client_addresses()
                experiment.wait_quiet()
                experiment.measure("before")
                experiment.start_connecting()
                experiment.wait_for_clients()
                if params.churn:
                    experiment.wait_for_duration()
                else:
                    experiment.measure("held")
                experiment.collect_server()
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
                if fault != faults.ENGINE_LOST:
                    addresses = experiment.client_addresses()
                experiment.drain(0.05)
    except (KeyboardInterrupt, Interrupted) as err:
        interrupted = err
        status, reason = results.STATUS_FAILED, f"interrupted ({type(err).__name__} {err})".strip()
    if experiment.left_behind:
        reason = (f"{reason}; the engine did not come back, so "
                  f"{len(experiment.left_behind)} resource(s) of the run are still on it: the "
                  "next run or `tcplimits clean` removes them")
    state = experiment.state
    record.update({k: round(v, 3) for k, v in experiment.timeline.items()})
    facts = run_facts(state)
    held = facts["held_sockets"]
    prediction = model.predict(
        params, server_nofile=resolved.server_nofile, server_workers=resolved.server_workers,
        held_ports=[held.get(str(c), []) for c in range(1, params.clients + 1)],
        conntrack_max=engine.get("nf_conntrack_max"),
        somaxconn=facts["somaxconn"] or model.SOMAXCONN, host_facts=host_facts)
    own = {int(role[len("client"):]): addrs for role, addrs in experiment.addresses.items()
           if role.startswith("client")}
    clients = client_rows(state, params, run_id, addresses, own)
    destinations = destination_rows(state, run_id)
    server = server_rows(state, run_id)
    series = series_rows(state, run_id)
    record["facts"].update(facts)
    record.update(
        status=status, reason=reason, prediction=prediction.to_dict(),
        held_ports={c: [s["port"] for s in sockets] for c, sockets in held.items()},
        totals={"connections": sum(r["connections"] or 0 for r in clients),
                "server_accepted": sum(r["accepted"] or 0 for r in server) if server else None},
        footprint=footprint_record(experiment.snapshots, state,
                                   sum(r["connections"] or 0 for r in clients)),
        fault=fault, ended_at=now(), duration_s=round(time.monotonic() - t0, 3),
        **tuple_record(experiment, state),
    )
    if params.churn:  # judged by the churn model, not by the hold model's prediction
        record["churn"] = churn_model.run_record(
            run_id, params, clients,
            [held.get(str(c), []) for c in range(1, params.clients + 1)],
            finished=status == results.STATUS_OK, seconds=state.churn)
    if experiment.quiet is not None:  # it got as far as connecting
        reasons = [experiment.quiet.reason] if experiment.quiet.noisy else []
        reasons += [r for r in [model.dropped_syns_reason(facts["listen_drops"],
                                                          prediction.limit)] if r]
        record.update(noisy=bool(reasons), noisy_reason="; ".join(reasons) or None)
        record["host_tcp"]["at_connect"] = experiment.quiet.before
    record["host_tcp"]["after"] = host.read_state(local_host)
    write_run(out_dir, record, clients, server, series,
              compose=compose_file(experiment.specs, run_id,
                                   address_plan=experiment.address_plan,
                                   addresses=experiment.addresses, bind_mode=params.bind_mode),
              destinations=destinations,
              save_logs=experiment.save_logs,
              churn=churn_rows(state, run_id, experiment.connect_started_at, params))
    if interrupted is not None:
        raise KeyboardInterrupt from interrupted
    return record
