"""Faults a run can meet, named once: what the run's record says (``fault`` and ``reason``)
and which exit code `tcplimits run` gives.

Faults of the experiment (a container killed, a worker dying, out of memory) are results: the
run is recorded as failed and the workflow carries on. Faults of the machine (the engine
unreachable or lost, the run directory not writable) say nothing about the experiment: the
command fails even with --exit-zero, so that the workflow retries the point later.
"""

from __future__ import annotations

import os
import signal

import docker.errors
import requests.exceptions
import urllib3.exceptions

# run.json "fault" values
ENGINE_UNREACHABLE = "engine_unreachable"  # no engine when the run started
ENGINE_LOST = "engine_lost"                # the engine stopped answering mid-run
CONTAINER_EXITED = "container_exited"      # a container exited or was killed mid-run
OOM = "oom"                                # a container was killed by its memory limit
WORKER_DIED = "worker_died"                # a client process or server worker died
AGENT_OUTPUT = "agent_output"              # an agent said what no agent says (protocol.py)
OUT_UNWRITABLE = "out_unwritable"          # the run directory could not be written (disk full)

MACHINE_FAULTS = {ENGINE_UNREACHABLE, ENGINE_LOST, OUT_UNWRITABLE}

EXIT_OK = 0
EXIT_FAILED = 1       # the run failed; run.json says why
EXIT_USAGE = 2        # bad input, --out refused: before any container
EXIT_UNSUPPORTED = 3  # the engine cannot run these parameters as asked
EXIT_MACHINE = 4      # the engine or the disk failed the run (not hidden by --exit-zero)


class RunFailed(Exception):
    """The run cannot go on; ``fault`` says what kind of fault stopped it."""

    def __init__(self, reason: str, fault: str | None = None):
        super().__init__(reason)
        self.fault = fault


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def is_engine_gone(err: BaseException) -> bool:
    """Did this error come from not reaching the engine at all (as opposed to the engine
    refusing a request)?"""
    if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        urllib3.exceptions.ProtocolError, ConnectionError)):
        return True
    if isinstance(err, docker.errors.DockerException) and not isinstance(
            err, docker.errors.APIError):
        text = str(err)
        return "Error while fetching server API version" in text or "Connection" in text
    return False


def permission_denied(err: BaseException) -> bool:
    """Did the engine's socket refuse us (a user not in the docker group), rather than no
    engine answering?"""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, PermissionError) or "Permission denied" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unreachable_reason(err: BaseException) -> str:
    address = engine_address()
    if permission_denied(err):
        return (f"permission denied on the Docker socket {address.removeprefix('unix://')}: "
                "add your user to the docker group (sudo usermod -aG docker $USER, then log "
                "in again), run as root, or point DOCKER_HOST at an engine you may use "
                "(rootless Docker)")
    return (f"cannot reach the Docker engine at {address} ({_short(err)}); start "
            "the daemon or point DOCKER_HOST at it, then run again")


def lost_reason(err: BaseException) -> str:
    return (f"lost the Docker engine at {engine_address()} mid-run ({_short(err)}); "
            "the run's results are incomplete")


def exit_description(role: str, state: dict, mem_limit: int | None) -> tuple[str, str]:
    """(reason, fault) for a container that stopped while the run needed it, from the
    engine's State (docker inspect)."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return oom_reason(role, mem_limit), OOM
    if state.get("Running"):
        return (f"{role} container still running but its output stream ended (the engine "
                "dropped it)"), ENGINE_LOST
    if isinstance(code, int) and code > 128:  # 128 + the signal that ended it
        return (f"{role} container killed ({_signal_name(code - 128)}, exit code {code})",
                CONTAINER_EXITED)
    return f"{role} container exited with code {code}", CONTAINER_EXITED


def oom_reason(role: str, mem_limit: int | None) -> str:
    limit = f" of {mem_limit / 2**20:.0f} MiB" if mem_limit else ""
    return f"{role} container killed by its memory limit{limit} (OOM)"


def worker_exit_reason(role: str, pid: int, code: int, what: str = "process") -> str:
    how = f"killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
    return f"{role} {what} pid {pid} {how} before reporting"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _short(err: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 error chain."""
    text = str(err)
    for needle in ("Permission denied", "No such file or directory", "Connection refused", "Connection reset",
                   "Connection aborted", "Broken pipe", "timed out", "Remote end closed"):
        if needle in text:
            return needle.lower()
    return text.splitlines()[0][:200] if text else type(err).__name__
