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


def test_rows_are_written_in_chunks_with_the_schema(tmp_path):
    import polars as pl

    from tcplimits import results

    rows = ({"run_id": "r", "role": "client", "client": i % 3, "proc": 1, "t_s": i / 10,
             "opened": i} for i in range(25_000))
    path = tmp_path / "run" / results.CHURN_FILE
    path.parent.mkdir()
    assert results.write_parquet_rows(rows, results.CHURN_SCHEMA, path, chunk_rows=10_000) \
        == 25_000
    df = pl.read_parquet(path)
    assert df.schema == pl.Schema(results.CHURN_SCHEMA) and df.height == 25_000
    assert df["opened"].to_list() == list(range(25_000))  # in order
    assert sorted(p.name for p in path.parent.iterdir()) == [results.CHURN_FILE]
    empty = tmp_path / "run" / "empty.parquet"
    assert results.write_parquet_rows([], results.CHURN_SCHEMA, empty) == 0
    assert pl.read_parquet(empty).schema == pl.Schema(results.CHURN_SCHEMA)
