"""The run directory before a run: checked (and, with --force, cleared) before any container
starts, so that a run never fails at the end for want of a place to write, and two runs never
mix in one directory.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from tcplimits import results

# What a run directory may hold: anything else means --out points somewhere that is not a
# run directory, and --force does not clear it: files by name, and logs/ (of <role>.log).
RUN_FILES = {results.RUN_JSON, *results.SCHEMAS, results.COMPOSE_FILE}
# Temp files of an interrupted atomic write (results._atomic: ".<name>.<random>.tmp") and of
# the writability probe below (".probe.<random>.tmp").
_TMP = re.compile(r"^\.(?:probe|" + "|".join(re.escape(n) for n in sorted(RUN_FILES))
                  + r")\.[A-Za-z0-9_]+\.tmp$")
# logs/ holds one <role>.log per container (Experiment.save_logs), or its temp file.
_LOG = re.compile(r"^\.?(?:server|client[0-9]+)\.log(?:\.[A-Za-z0-9_]+\.tmp)?$")

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


def _is_file(path: Path) -> bool:
    """A regular file, not a symlink (lstat: a planted link is a stranger)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_run_entry(out: Path, name: str) -> bool:
    """Is ``out/name`` something a run writes, of the kind it writes? Names alone are not
    enough: a directory called logs/ holding anything, or a directory named like a temp
    file, is not a run's."""
    path = out / name
    if name in RUN_FILES or _TMP.match(name):
        return _is_file(path)
    if name == results.LOGS_DIR:
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
            return all(_LOG.match(e) and _is_file(path / e) for e in os.listdir(path))
        except OSError:
            return False
    return False


def _remove_run_entries(out: Path, entries: list[str]) -> None:
    """Unlink what a run writes, file by file; never a recursive removal (rmdir of logs/
    fails rather than follow anything put there meanwhile)."""
    for entry in entries:
        path = out / entry
        if entry == results.LOGS_DIR and not path.is_symlink() and path.is_dir():
            for log in os.listdir(path):
                if _LOG.match(log) and _is_file(path / log):
                    (path / log).unlink()
            path.rmdir()
        elif _is_file(path):
            path.unlink()


def prepare(out: Path, *, force: bool, need_bytes: int) -> None:
    """Refuse an --out that holds an earlier run (clear it with ``force``), is not writable,
    or has less free space than the run needs. Raises OutDirError naming --out."""
    from tcplimits.engine.faults import OUT_UNWRITABLE

    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out}: exists and is not a directory")
    entries = sorted(os.listdir(out)) if out.is_dir() else []
    if entries:
        strangers = [e for e in entries if not _is_run_entry(out, e)]
        if strangers:
            raise OutDirError(f"--out {out}: not empty and not a run directory (holds "
                              f"{', '.join(strangers[:3])}); choose an empty or new directory")
        if not force:
            earlier = _earlier_run_id(out)
            raise OutDirError(f"--out {out}: already holds "
                              + (f"run {earlier}" if earlier else "an earlier run's files")
                              + "; pass --force to replace it, or choose another directory")
        _remove_run_entries(out, entries)
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
        # Our own logs go even from a logs/ that holds something else too (it stays).
        if _is_run_entry(out, entry) or entry == results.LOGS_DIR:
            try:
                _remove_run_entries(out, [entry])
            except OSError:
                pass
