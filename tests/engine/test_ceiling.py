"""A small ceiling held on the real engine (issue 22): `connections: ceiling` resolves to the
predicted number where the run starts, the run holds it within 1%, and the limit named is
the one that stopped it. No host setting is changed: the first limit is the engine's nofile
cap seen through two client processes; the second is a host-wide limit (MemAvailable) made
small in the facts the run reads, so that the share path is held at a few ten thousand."""

import polars as pl
import pytest
from tests.engine.helpers import run_ok

from tcplimits import results
from tcplimits.engine import footprint, probe_engine
from tcplimits.model import hostlimits

pytestmark = pytest.mark.docker


def run(engine, tmp_path, **values):
    record = run_ok(engine, tmp_path / "ceiling-test", network="loopback",
                    port_range="1024-65535", connections="ceiling", quiet_host_timeout=5,
                    **values)
    return record, pl.read_parquet(tmp_path / "ceiling-test" / results.CLIENTS_FILE)


def test_the_engine_nofile_cap_through_two_processes_is_held_and_stops_it(engine, tmp_path):
    cap = probe_engine(engine, log=lambda m: None)["engine_nofile_cap"]
    if cap > 40_000:
        pytest.skip(f"the engine's nofile cap ({cap:,}) would make this more than 80,000 "
                    "connections")
    record, clients = run(engine, tmp_path, clients=1, procs=2, nofile=cap)
    resolved = record["ceiling"]
    predicted = resolved["predicted"]
    assert resolved["asked"] == "ceiling" and resolved["held_by"] == "limit"
    assert predicted["binding"]["name"] == "layout: descriptors"
    # recorded as the number, in the run's parameters too
    assert record["params"]["connections"] == resolved["connections"] == 2 * (cap - 3)
    held = record["totals"]["connections"]
    assert abs(held - resolved["connections"]) <= 0.01 * resolved["connections"]
    assert clients["error"].to_list() == [predicted["binding"]["errno"]] * 2 == ["EMFILE"] * 2


def test_a_host_wide_limit_is_held_below_by_each_process_share(engine, tmp_path, monkeypatch):
    real = footprint.host_facts
    # MemAvailable as if the host had room for ~30,000 connections and these processes.
    small = int(hostlimits.memory_needed(30_000, 12) / (1 - hostlimits.MEMORY_HEADROOM))

    def facts(*args, **kwargs):
        return {**real(*args, **kwargs), hostlimits.MEMORY: small}

    monkeypatch.setattr(footprint, "host_facts", facts)
    record, clients = run(engine, tmp_path, clients=2, procs=4, nofile=10_000)
    resolved = record["ceiling"]
    assert resolved["predicted"]["binding"]["name"] == hostlimits.MEMORY
    assert resolved["held_by"] == "share" and 25_000 < resolved["connections"] < 35_000
    held = record["totals"]["connections"]
    assert abs(held - resolved["connections"]) <= 0.01 * resolved["connections"]
    assert set(clients["error"].to_list()) == {"MAX_CONNECTIONS"}
    assert record["prediction"]["total"] == held
    # the run was not refused: the share keeps it inside the host's limit
    assert not [lim for lim in record["host_limits"]
                if lim["effect"] == "refused" and lim["stops_at"] is not None]
