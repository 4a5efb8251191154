"""`tcplimits ... | head -1`: a reader of stdout that leaves before the command has printed
everything ends the command quietly (no traceback, no "Exception ignored" on stderr), whether
the command printed through its own code or argparse's. No Docker engine is needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcplimits.engine.faults import EXIT_FAILED

ROOT = Path(__file__).resolve().parents[2]


def run_with_reader_gone(*args: str) -> subprocess.CompletedProcess:
    """The command with stdout a pipe whose reader has already left: its first write fails
    with EPIPE. Output buffered as on a terminal user's machine (PYTHONUNBUFFERED unset), so
    that the last write is the one at exit."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        return subprocess.run([sys.executable, "-m", "tcplimits", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=60,
                              check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [("points", "config/seed.yaml"), ("--version",),
                                  ("points", "--help")])
def test_a_reader_that_leaves_ends_the_command_quietly(args):
    done = run_with_reader_gone(*args)
    assert done.stderr == ""
    assert done.returncode == EXIT_FAILED


def test_a_reader_that_stays_gets_everything():
    done = subprocess.run([sys.executable, "-m", "tcplimits", "points", "config/seed.yaml"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip()
