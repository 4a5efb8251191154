"""The run directory before a run: checked (and, with --force, cleared) before any container
starts, so that a run never fails at the end for want of a place to write, and two runs never
mix in one directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from tcplimits import results

# What a run directory may hold: anything else means --out points somewhere that is not a
# run directory, and --force does not clear it.
RUN_ENTRIES = {results.RUN_JSON, *results.SCHEMAS, results.COMPOSE_FILE, results.LOGS_DIR}

BYTES_FIXED = 256 * 2**10   # run.json, compose.yml, three Parquet footers, log headers
BYTES_PER_SAMPLE = 400      # one progress line in a log (~150 B) and its Parquet row, twice over


class OutDirError(Exception):
    """--out cannot take this run; ``fault`` is set when the machine is to blame (no space),
    not the value of --out (read-only, not a run directory, holds an earlier run)."""

    def __init__(self, message: str, fault: str | None = None):
        super().__init__(message)
        self.fault = fault


def expected_bytes(processes: int, samples_per_process: int) -> int:
    """An upper bound of a run directory's size: it grows with the progress samples, a bounded
    number per client process, not with the connections."""
    return BYTES_FIXED + processes * (samples_per_process + 2) * BYTES_PER_SAMPLE


def _is_run_entry(name: str) -> bool:
    # Temp files of an interrupted atomic write (".<name>.<random>.tmp") too.
    return name in RUN_ENTRIES or (name.startswith(".") and name.endswith(".tmp"))


def prepare(out: Path, *, force: bool, need_bytes: int) -> None:
    """Refuse an --out that holds an earlier run (clear it with ``force``), is not writable,
    or has less free space than the run needs. Raises OutDirError naming --out."""
    from tcplimits.engine.faults import OUT_UNWRITABLE

    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out}: exists and is not a directory")
    entries = sorted(os.listdir(out)) if out.is_dir() else []
    if entries:
        strangers = [e for e in entries if not _is_run_entry(e)]
        if strangers:
            raise OutDirError(f"--out {out}: not empty and not a run directory (holds "
                              f"{', '.join(strangers[:3])}); choose an empty or new directory")
        if not force:
            earlier = _earlier_run_id(out)
            raise OutDirError(f"--out {out}: already holds "
                              + (f"run {earlier}" if earlier else "an earlier run's files")
                              + "; pass --force to replace it, or choose another directory")
        for entry in entries:
            path = out / entry
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", suffix=".tmp") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:  # a full disk is the machine's fault; a read-only place, --out's
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        raise OutDirError(f"--out {out}: cannot write there: {err.strerror or err}",
                          fault=OUT_UNWRITABLE if full else None) from err
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise OutDirError(f"--out {out}: {free / 2**10:,.0f} KiB free, the run needs about "
                          f"{need_bytes / 2**10:,.0f} KiB; free some space or choose another "
                          f"directory ({os.strerror(errno.ENOSPC)})", fault=OUT_UNWRITABLE)


def _earlier_run_id(out: Path) -> str | None:
    try:
        record = results.read_run(out)
        return str(record.get("run_id")) if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def clear(out: Path) -> None:
    """Remove what a failed write left, so that no partial run directory remains."""
    if not out.is_dir():
        return
    for entry in os.listdir(out):
        if _is_run_entry(entry):
            path = out / entry
            try:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            except OSError:
                pass
