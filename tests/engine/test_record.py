"""The run record: run.json's skeleton, a stopped run's outcome, and a finished run assembled
from what the experiment measured (no Docker: a stand-in experiment)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from tcplimits import results
from tcplimits.config.params import RunParams
from tcplimits.engine.events import RunState
from tcplimits.engine.plan import Resolved
from tcplimits.engine.record import assemble, close_record, new_record


def test_new_record_has_every_key_in_run_json_order():
    record = new_record("r", RunParams())
    assert list(record)[:4] == ["run_id", "status", "reason", "fault"]
    assert record["facts"] == {} and record["status"] is None and record["started_at"]


def test_close_record_sets_the_outcome_and_the_duration():
    record = close_record(new_record("r", RunParams()), time.monotonic() - 1.0,
                          status=results.STATUS_UNSUPPORTED, reason="no room")
    assert (record["status"], record["reason"]) == (results.STATUS_UNSUPPORTED, "no room")
    assert record["duration_s"] >= 1.0 and record["ended_at"]


def _experiment(params: RunParams) -> SimpleNamespace:
    state = RunState()
    state.take("client1", {"event": "ready", "client": 1, "held": [
        {"addr": "127.0.0.11", "port": 40719, "state": "LISTEN"}]})
    state.take("client1", {"event": "result", "client": 1, "proc": 1, "connections": 999,
                           "error": "EADDRNOTAVAIL"})
    state.take("server", {"event": "result", "worker": 1, "accepted": 999})
    return SimpleNamespace(
        params=params, resolved=Resolved(20000, 1, 1), run_id="r", state=state,
        timeline={"setup_s": 1.23456}, addresses={"client1": ["10.0.0.3"]}, snapshots={},
        connect_started_at=None, specs={"server": {}, "client1": {}}, address_plan=None,
        network_ipam=None, helpers=[], quiet=None, local_host=False)


def test_assemble_predicts_with_the_held_ports_and_totals_the_tables():
    params = RunParams(port_range="40000-40999")
    record = new_record("r", params)
    record["host_tcp"] = {"before": None}
    tables = assemble(record, _experiment(params), engine={"nf_conntrack_max": None},
                      host_facts=None, status=results.STATUS_OK, reason=None, fault=None,
                      addresses={1: "10.0.0.3"}, started=time.monotonic())
    assert record["prediction"]["total"] == 999 and record["prediction"]["limit"] == "ports"
    assert record["totals"] == {"connections": 999, "server_accepted": 999}
    assert record["held_ports"] == {"1": [40719]} and record["setup_s"] == 1.235
    assert record["facts"]["held_sockets"]["1"][0]["owner"] == "docker-dns"
    assert [r["connections"] for r in tables.clients] == [999]
    assert record["host_tcp"]["after"]["source"].startswith("unknown")
