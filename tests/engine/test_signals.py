"""SIGTERM and SIGHUP outside the experiment block (the engine probe here): the process
removes what it created and exits 130; and what containers say reaches a terminal without
its escape sequences."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tcplimits import results
from tcplimits.terminal import printable


def test_printable_strips_escapes_and_controls_but_keeps_lines():
    hostile = ("EMFILE\x1b[2J\x1b[1;1Hfake prompt\x1b]0;title\x07 \x9b31m red\x1b[0m\r"
               "over\x08\x00\tend\nnext")
    assert printable(hostile) == "EMFILEfake prompt  redover\tend\nnext"


def test_a_runs_reason_is_printed_without_escapes(tmp_path):
    from tests.results.rundirs import write_ok_run
    from tcplimits.cli import summary
    from tcplimits.config.params import RunParams

    run_dir = tmp_path / "run"
    write_ok_run(run_dir, "run", RunParams(port_range="40000-40999"), held=[[]],
                 per_proc=[1000], error="EADDRNOTAVAIL\x1b[31m")
    record = results.read_run(run_dir)
    record.update(status="failed", reason="client1 exited (last output: \x1b]0;owned\x07"
                  "\x1b[2Jhello)", noisy=True, noisy_reason="\x1b[1Aup")
    results.write_json(record, run_dir / results.RUN_JSON)
    text = summary(run_dir)
    assert "\x1b" not in text and "\x07" not in text
    assert "last output: hello)" in text and "noisy: up" in text


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_probe_leaves_no_probe_container(tmp_path, signum):
    import docker

    engine = docker.from_env()
    proc = subprocess.Popen([sys.executable, "-m", "tcplimits", "probe", "--refresh"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path),
                                 "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})

    def probes():
        return [c for c in engine.containers.list(all=True, sparse=True, filters={
            "label": ["tcplimits.role=probe"]})
            if f":{proc.pid}:" in (c.attrs.get("Labels") or {}).get("tcplimits.owner", "")]

    try:
        end = time.monotonic() + 120
        while not probes():  # measuring: the bisection's containers come and go
            assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (f"tcplimits probe: interrupted "
                                            f"({signal.Signals(signum).name})")
    assert probes() == []
