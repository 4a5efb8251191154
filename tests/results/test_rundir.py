"""Run directory files: written with the process's umask, which is read, never set."""

from __future__ import annotations

import os
import subprocess
import sys


def test_files_follow_the_umask_and_importing_never_sets_it(tmp_path):
    code = ("import os, sys\n"
            "os.umask(int(sys.argv[2], 8))\n"
            "real = os.umask\n"
            "def refuse(mask): raise AssertionError('os.umask called')\n"
            "os.umask = refuse\n"
            "from tcplimits import results\n"
            "results.write_json({'a': 1}, sys.argv[1])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for mask, mode in (("022", 0o644), ("077", 0o600), ("002", 0o664)):
        target = tmp_path / f"run-{mask}.json"
        proc = subprocess.run([sys.executable, "-c", code, str(target), mask],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert oct(target.stat().st_mode & 0o777) == oct(mode)
