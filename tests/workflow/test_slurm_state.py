"""scripts/slurm-local.sh runs as root and trusts its state directory's munge key: a state
directory or key that another user made first is refused before anything starts. The script
runs with /usr/sbin off PATH, so that a check that wrongly passes stops at the missing
daemons instead of starting a cluster."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.workflow.test_workflow import ROOT

SCRIPT = ROOT / "scripts" / "slurm-local.sh"
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the script runs as root")


def _start(state):
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin",
                                           "TCPLIMITS_SLURM_STATE": str(state)})
    return proc.returncode, proc.stderr.strip()


def _root_state(tmp_path):
    state = tmp_path / "state"
    (state / "munge").mkdir(parents=True)
    state.chmod(0o755)
    return state


def test_a_state_directory_another_user_made_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    code, err = _start(state)
    assert code == 1
    assert err.startswith(f"slurm-local: {state} belongs to uid {NOBODY}, not root")
    assert os.listdir(state) == []


def test_a_planted_munge_key_is_refused(tmp_path):
    state = _root_state(tmp_path)
    key = state / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    os.chown(key, NOBODY, NOBODY)
    code, err = _start(state)
    assert (code, err.split(" belongs")[0]) == (1, f"slurm-local: {key}")
    os.chown(key, 0, 0)
    key.chmod(0o644)  # root's, but anyone may have read it
    code, err = _start(state)
    assert (code, err.split(",")[0]) == (1, f"slurm-local: {key} has mode 644")


def test_a_planted_folder_or_link_is_refused(tmp_path):
    state = _root_state(tmp_path)
    os.chown(state / "munge", NOBODY, NOBODY)
    code, err = _start(state)
    assert (code, err.split(" belongs")[0]) == (1, f"slurm-local: {state / 'munge'}")
    link = tmp_path / "link"
    link.symlink_to(state)
    code, err = _start(link)
    assert (code, err.split(" is a symbolic")[0]) == (1, f"slurm-local: {link}")


def test_a_state_in_another_users_folder_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    code, err = _start(theirs / "state")
    assert code == 1 and err.startswith(f"slurm-local: {theirs} is not root's own")
    assert not (theirs / "state").exists()


def test_a_fresh_state_passes_the_checks(tmp_path):
    """Then it stops at the daemons, missing from this PATH: nothing is started."""
    code, err = _start(tmp_path / "fresh")
    assert code == 1 and err.startswith("slurm-local: missing slurmctld"), err
