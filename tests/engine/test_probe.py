"""Engine facts: only the nofile cap is cached; what an operator may change between runs
(nf_conntrack_max) is read for each run; a damaged cache is measured again."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import docker
import pytest

from tcplimits import model
from tcplimits.config.params import RunParams
from tcplimits.engine import probe, run_experiment

CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")


class _Engine:
    """Just what probe_engine asks of a client before it measures."""

    class api:
        base_url = "http+docker://localhost"

    def info(self):
        return {"ID": "fake-engine", "KernelVersion": "6.1"}

    def version(self):
        return {"Version": "27.0", "ApiVersion": "1.46"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "_cache_dir", lambda: tmp_path)
    return tmp_path


def test_only_the_cap_is_cached_and_a_bad_cache_is_measured_again(cache, monkeypatch):
    measured = []
    monkeypatch.setattr(probe, "measure_nofile_cap",
                        lambda client, image: measured.append(image) or 524288)
    monkeypatch.setattr(probe, "conntrack_max", lambda client, image, local: 1234)
    facts = probe.probe_engine(_Engine(), image="img", log=lambda m: None)
    assert (facts["engine_nofile_cap"], facts["nf_conntrack_max"], measured) == (524288, 1234,
                                                                                 ["img"])
    (entry,) = cache.glob("nofile-cap-*.json")
    assert set(json.loads(entry.read_text())) == {"key", "engine_nofile_cap", "measured_at"}
    monkeypatch.setattr(probe, "conntrack_max", lambda client, image, local: 5678)
    assert probe.probe_engine(_Engine(), image="img", log=lambda m: None)["nf_conntrack_max"] \
        == 5678  # read again, not cached
    assert len(measured) == 1
    for damaged in ("{", "[]", '{"key": "other", "engine_nofile_cap": 524288}',
                    json.dumps({"key": "fake-engine-27.0-6.1", "engine_nofile_cap": 7}),
                    json.dumps({"key": "fake-engine-27.0-6.1", "engine_nofile_cap": "big"})):
        entry.write_text(damaged)
        assert probe.probe_engine(_Engine(), image="img",
                                  log=lambda m: None)["engine_nofile_cap"] == 524288
    assert len(measured) == 6
    entry.chmod(0)  # unreadable (root reads anyway: then it is valid and used)
    probe.probe_engine(_Engine(), image="img", log=lambda m: None)


@pytest.mark.docker
def test_a_changed_nf_conntrack_max_reaches_the_next_runs_record_and_prediction(
        tmp_path, monkeypatch):
    """Raised between two runs (never lowered below what it was, restored after): the second
    run's environment block and the model's conntrack room are the new value."""
    if not CONNTRACK_MAX.exists():
        pytest.skip("no nf_conntrack on this host")
    client = docker.from_env()
    asked = []
    real = model.predict
    monkeypatch.setattr(model, "predict", lambda *a, **k: asked.append(k.get("conntrack_max"))
                        or real(*a, **k))
    params = RunParams.from_mapping({"port_range": "40000-40031", "nofile": 64,
                                     "quiet_host_timeout": 0})

    def run(name):
        run_id = f"stale-{name}-{uuid.uuid4().hex[:6]}"
        record = run_experiment(params, tmp_path / run_id, run_id=run_id, progress=False,
                                client=client, log=lambda m: None)
        assert record["status"] == "ok", record["reason"]
        return record

    before = int(CONNTRACK_MAX.read_text())
    first = run("first")  # fills the engine cache, if it was not there yet
    raised = before + 1024
    try:
        CONNTRACK_MAX.write_text(str(raised))
        second = run("second")
    finally:
        if int(CONNTRACK_MAX.read_text()) == raised:  # nobody else changed it meanwhile
            CONNTRACK_MAX.write_text(str(before))
    assert first["environment"]["nf_conntrack_max"] == before
    assert second["environment"]["nf_conntrack_max"] == raised
    assert second["host"]["net.netfilter.nf_conntrack_max"] == raised
    assert asked[-1] == raised


@pytest.mark.docker
def test_probe_containers_are_created_with_limits():
    client = docker.from_env()
    from tcplimits.image import ensure_image

    image = ensure_image(client, log=lambda m: None).id
    container = probe._probe_container(client, image, 1024, ["true"])
    try:
        host = container.attrs["HostConfig"]
        assert (host["PidsLimit"], host["Memory"], host["MemorySwap"]) == (16, 2**26, 2**26)
        assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
    finally:
        container.remove(force=True)
