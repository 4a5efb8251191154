"""Real runs: teardown leaves no socket of the run in the host's kernel, and every run records
the host's TCP state and whether it was quiet when it connected.

The host's counters (/proc/net/sockstat) move with every other run on the shared engine, so
what a run leaves is counted in its own network namespaces, kept alive past its containers
by tcplimits.engine.host.NamespaceWatch (orphans and TIME-WAIT entries of a namespace are listed in
its /proc/<pid>/net/tcp and counted in its sockstat)."""

import json
import threading

import docker
import polars as pl
import pytest

from tcplimits.results import dataset
from tcplimits.engine import host
from tcplimits import results
from tcplimits.engine import experiment, teardown
from tcplimits.cli import summary
from tcplimits.engine import run_experiment
from tcplimits.config.params import RunParams
from tests.engine.helpers import unique_id

pytestmark = pytest.mark.docker

PORTS = "40000-41999"  # 2,000 connections held by the client, 2,000 by the server


@pytest.fixture(scope="module")
def client():
    c = docker.from_env()
    c.ping()
    return c


@pytest.fixture
def watched(monkeypatch):
    """Watch the namespaces of the run's server and clients from the moment they are up."""
    watches = []
    wait_quiet = experiment.Experiment.wait_quiet

    def watching(self):
        watches.append(host.NamespaceWatch(self.client, self.image, self.containers,
                                           self.run_id))
        return wait_quiet(self)

    monkeypatch.setattr(experiment.Experiment, "wait_quiet", watching)
    yield watches
    for w in watches:
        w.remove()


def _run(client, tmp_path, name, **values):
    params = RunParams.from_mapping({"port_range": PORTS, "nofile": 15000, "quiet_host_timeout": 5,
                                     **values})
    record = run_experiment(params, tmp_path / name, run_id=unique_id(name), progress=False,
                            client=client, log=lambda m: None)
    assert record["status"] == "ok", record["reason"]
    return record


def _netns_sockstat(pid):
    return host.parse_sockstat(open(f"/proc/{pid}/net/sockstat").read())


def test_run_leaves_no_orphan_or_time_wait_socket(client, tmp_path, watched):
    record = _run(client, tmp_path, "teardown-clean")
    assert record["totals"]["connections"] >= 1990
    (watch,) = watched
    assert set(watch.pids) == {"server", "client1"}
    for role, states in watch.lingering().items():
        assert states == dict.fromkeys(host.LINGERING_STATES, 0), (role, states)
        # sockstat of the namespace: no TIME-WAIT; in use at most Docker's DNS listener.
        stat = _netns_sockstat(watch.pids[role])
        assert stat["tw"] == 0 and stat["inuse"] <= 1, (role, stat)


def test_the_check_sees_what_an_abrupt_teardown_leaves(client, tmp_path, watched, monkeypatch):
    """The same run torn down the old way (containers removed at once, connections closed
    with FIN by process exit) leaves its connections lingering: the check above can fail."""
    specs = experiment.container_specs

    def graceful(*args, **kwargs):
        out = specs(*args, **kwargs)
        for spec in out.values():
            spec["command"] = [*spec["command"], "--close", "graceful"]
        return out

    monkeypatch.setattr(teardown, "AGENT_STOP_S", 0)
    monkeypatch.setattr(experiment, "container_specs", graceful)
    _run(client, tmp_path, "teardown-abrupt")
    (watch,) = watched
    left = sum(sum(states.values()) for states in watch.lingering().values())
    assert left >= 1000, watch.lingering()


def test_run_records_host_tcp_state_before_and_after(client, tmp_path):
    record = _run(client, tmp_path, "host-state", port_range="40000-40199")
    saved = json.loads((tmp_path / "host-state" / results.RUN_JSON).read_text())
    assert saved["host_tcp"] == record["host_tcp"]
    tcp = record["host_tcp"]
    assert set(tcp) == {"before", "at_connect", "after"}
    for moment, state in tcp.items():
        assert state["source"] == "local /proc", moment
        assert all(isinstance(state[k], int) for k in host.SOCKSTAT_KEYS), (moment, state)
        assert state["alloc"] >= 1 and state["mem"] >= 0
    assert tcp["before"]["at"] <= tcp["at_connect"]["at"] <= tcp["after"]["at"]
    assert isinstance(record["noisy"], bool) and record["quiet_wait_s"] >= 0
    # noisy exactly when the host held more closed sockets than allowed after the wait, or
    # the server dropped SYNs (backlog 128 here: a slow accept loop can overflow it)
    left = host.leftover_sockets(tcp["at_connect"])
    drops = record["facts"]["listen_drops"]
    assert isinstance(drops, int) and drops >= 0
    assert record["noisy"] == (left > 1000 or drops > 0), (left, drops, record["noisy_reason"])
    if record["noisy"]:
        assert ("orphaned" in record["noisy_reason"]) == (left > 1000)
        assert ("dropped" in record["noisy_reason"]) == (drops > 0)
    assert (record["noisy_reason"] is None) == (not record["noisy"])
    # The client's CPU time while connecting: a time that other load does not lengthen.
    row = pl.read_parquet(tmp_path / "host-state" / results.CLIENTS_FILE).row(0, named=True)
    assert 0 < row["cpu_s"] <= row["elapsed_s"] + 0.05


def test_noisy_host_runs_anyway_marked_noisy(client, tmp_path, monkeypatch):
    real = host.read_state

    def crowded(local=True):  # a host still full of an earlier run's orphans
        return {**real(local), "orphan": 50_000}

    monkeypatch.setattr(host, "read_state", crowded)
    record = _run(client, tmp_path, "noisy", port_range="40000-40199", quiet_host_timeout=2,
                  quiet_host_sockets=100)
    assert record["noisy"] is True and 2 <= record["quiet_wait_s"] < 4
    assert "50,000 orphaned" in record["noisy_reason"]
    assert record["totals"]["connections"] >= 190  # it ran anyway
    assert "noisy: host not quiet" in summary(tmp_path / "noisy")
    dataset.build_dataset([tmp_path / "noisy"], tmp_path / "ds")
    runs = pl.read_parquet(tmp_path / "ds" / "runs.parquet")
    assert runs.select("noisy", "host_orphan_at_connect").row(0) == (True, 50_000)
    assert "50,000 orphaned" in runs["noisy_reason"][0]


def test_syns_dropped_at_a_full_accept_queue_mark_a_port_bound_run_noisy(client, tmp_path,
                                                                         monkeypatch):
    # The server is frozen (docker pause) for 1.5 s as the clients start: with backlog 1 its
    # accept queue holds 2 connections, every later SYN is dropped and its connect() waits a
    # retransmit. The counts stand (the port pool binds, as the model says); the times carry
    # that wait, so the run is noisy and says why.
    from tcplimits.engine import runner

    class FrozenServer(runner.Experiment):
        def start_connecting(self):
            server = self.containers["server"]
            server.pause()
            thaw = threading.Timer(1.5, server.unpause)
            thaw.start()
            super().start_connecting()
            thaw.join()

    monkeypatch.setattr(runner, "Experiment", FrozenServer)
    params = RunParams(port_range="40000-40499", nofile=15000, backlog=1)
    record = run_experiment(params, tmp_path / "drops", run_id=unique_id("drops"), progress=False,
                            client=client, log=lambda m: None)
    assert record["status"] == "ok", record["reason"]
    assert record["prediction"]["limit"] == "ports"
    drops = record["facts"]["listen_drops"]
    assert drops >= 1
    assert record["noisy"] and f"dropped {drops:,} SYN" in record["noisy_reason"]
    clients = pl.read_parquet(tmp_path / "drops" / results.CLIENTS_FILE)
    assert clients["error"].to_list() == ["EADDRNOTAVAIL"]
    row = dataset.run_row(json.loads((tmp_path / "drops" / "run.json").read_text()),
                          tmp_path / "drops")
    assert row["noisy"] and "ListenDrops" in row["noisy_reason"]


def test_a_run_without_drops_records_zero_and_stays_quiet(client, tmp_path):
    record = run_experiment(RunParams(port_range="40000-40499", nofile=15000, backlog=4096),
                            tmp_path / "nodrops", run_id=unique_id("nodrops"), progress=False,
                            client=client, log=lambda m: None)
    assert record["status"] == "ok" and record["facts"]["listen_drops"] == 0
    assert record["noisy"] is False or "SYN" not in (record["noisy_reason"] or "")
