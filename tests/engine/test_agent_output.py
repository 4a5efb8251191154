"""A run whose agent says what no agent says fails with the reason and a run.json, and leaves
nothing on the engine."""

from __future__ import annotations

import pytest

from tests.engine.helpers import labelled, unique_id
from tcplimits import results
from tcplimits.config.params import RunParams
from tcplimits.engine import experiment as experiment_module, faults, run_experiment

pytestmark = pytest.mark.docker


def test_a_client_claiming_another_clients_number_fails_the_run(engine, tmp_path, monkeypatch):
    """client1's container says it is client 2, with a count (as a compromised or broken
    agent could): the run fails on it, with the reason, and writes its run directory."""
    real = experiment_module.Experiment.start_connecting

    def forged(self):
        real(self)
        self.events.put(("client1", {"event": "result", "client": 2, "proc": 1,
                                     "connections": 10**9, "errno": None, "error": None,
                                     "message": None, "elapsed_s": 1.0, "cpu_s": 0.1}))

    monkeypatch.setattr(experiment_module.Experiment, "start_connecting", forged)
    run_id = unique_id("forged")
    record = run_experiment(RunParams(port_range="40000-40049", nofile=100, clients=2,
                                      quiet_host_timeout=0),
                            tmp_path / run_id, run_id=run_id, progress=False, client=engine,
                            log=lambda m: None)
    assert record["status"] == "failed" and record["fault"] == faults.AGENT_OUTPUT
    assert record["reason"].startswith("an agent said what no agent says (1 event(s) refused): "
                                       "client1: result event: client is 2, but it came from "
                                       "client 1's container")
    written = results.read_run(tmp_path / run_id)
    assert written["status"] == "failed" and written["reason"] == record["reason"]
    assert record["totals"]["connections"] < 10**9  # the forged count was never taken
    assert labelled(engine, run_id) == ([], [])
