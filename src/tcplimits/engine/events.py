"""What the agents say: each container's output followed in a thread, its JSON lines queued as
events, and the run's state as the engine has heard it so far.

The controller's memory stays bounded whatever a run's size or a container's output: a
container's log goes to a temporary file as it comes (its first LOG_KEEP_BYTES, then only its
last TAIL_LINES lines), a line is cut at MAX_LINE_BYTES, and mode churn's per-second events
(32 clients x 64 processes x 3,600 s is 7.4 million) are spooled to a temporary file, not
kept as dicts (about 1 KB each: 7 GiB).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import struct
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tcplimits.engine import faults, protocol

MAX_LINE_BYTES = 8 * 2**20  # a ready line lists the ports held at start: up to ~3 MB
LOG_KEEP_BYTES = 64 * 2**20  # of each container's log, on disk; then its tail only
TAIL_LINES = 200

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LogReader(threading.Thread):
    """Follows one container's output: spools the text to a temporary file (bounded), keeps
    its last lines in memory, queues each JSON event."""

    def __init__(self, container, role: str, events: queue.Queue):
        super().__init__(daemon=True, name=f"logs-{role}")
        self.container, self.role, self.events = container, role, events
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)  # the newest, for exit reasons
        self._spool = tempfile.TemporaryFile(prefix="tcplimits-log-")
        self._spooled = 0
        self._dropped = 0  # lines past LOG_KEEP_BYTES: only the tail keeps them

    def run(self) -> None:
        buffer, cut = bytearray(), False
        try:
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    if not cut:
                        self._line(bytes(buffer[:end]).decode(errors="replace"))
                    cut = False
                    del buffer[:end + 1]
                if len(buffer) > MAX_LINE_BYTES:  # no newline in sight: cut it here
                    if not cut:
                        self._line(bytes(buffer[:200]).decode(errors="replace")
                                   + f"... [tcplimits: line cut at {MAX_LINE_BYTES:,} bytes]")
                    buffer.clear()
                    cut = True
        except Exception as err:  # the container was removed under us: end quietly
            self._keep(f"[tcplimits: log stream ended: {err}]")
        if buffer and not cut:
            self._line(bytes(buffer).decode(errors="replace"))
        self.events.put((self.role, {"event": "_closed"}))

    def _line(self, line: str) -> None:
        self._keep(line)
        if line.startswith("{"):
            try:
                event = json.loads(line)  # NaN parses: protocol.problem refuses it
            except ValueError:
                return
            if isinstance(event, dict):
                self.events.put((self.role, event))

    def _keep(self, line: str) -> None:
        self.lines.append(line)
        data = (line + "\n").encode(errors="replace")
        if self._spooled + len(data) <= LOG_KEEP_BYTES:
            self._spool.write(data)
            self._spooled += len(data)
        else:
            self._dropped += 1

    def save(self, path: Path) -> None:
        """The log as a file: what was spooled, then (past LOG_KEEP_BYTES) a note and the
        newest lines. Call once the reader has ended."""
        from tcplimits import results

        def write(tmp: str) -> None:
            with open(tmp, "wb") as out:
                self._spool.seek(0)
                shutil.copyfileobj(self._spool, out)
                if self._dropped:
                    tail = list(self.lines)[-min(self._dropped, TAIL_LINES):]
                    out.write(f"[tcplimits: {self._dropped - len(tail):,} lines not kept "
                              f"(the log is bounded at {LOG_KEEP_BYTES:,} bytes); the last "
                              f"{len(tail)}:]\n".encode())
                    out.write("".join(f"{line}\n" for line in tail).encode(errors="replace"))

        results.rundir._atomic(Path(path), write)


class ChurnSpool:
    """Mode churn's per-second events, spooled to a temporary file in a fixed binary layout
    (40 bytes each); iterating reads them back as dicts, again on every pass."""

    _ROW = struct.Struct("<iidqqd")  # client, proc, second, opened, errors, latency (NaN: none)

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="tcplimits-churn-")
        self._errors: dict[int, str] = {}  # row -> errno name (a process stops at its first)
        self._rows = 0
        self._lock = threading.Lock()

    def append(self, event: dict) -> None:
        latency = event.get("connect_latency_s")
        with self._lock:
            self._file.seek(0, os.SEEK_END)
            self._file.write(self._ROW.pack(event["client"], event["proc"],
                                            float(event["second"]), event["opened"],
                                            event["errors"],
                                            float("nan") if latency is None else latency))
            if event.get("error") is not None:
                self._errors[self._rows] = str(event["error"])
            self._rows += 1

    def __len__(self) -> int:
        return self._rows

    def __bool__(self) -> bool:
        return self._rows > 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        size, row = self._ROW.size, 0
        with self._lock:
            self._file.flush()
            reader = open(os.dup(self._file.fileno()), "rb", closefd=True)
        with reader:
            reader.seek(0)
            while row < self._rows and (block := reader.read(size * 4096)):
                for values in self._ROW.iter_unpack(block[:len(block) // size * size]):
                    client, proc, second, opened, errors, latency = values
                    yield {"client": client, "proc": proc, "second": second,
                           "opened": opened, "errors": errors, "error": self._errors.get(row),
                           "connect_latency_s": None if latency != latency else latency}
                    row += 1


@dataclass
class RunState:
    """What the engine has heard from the agents so far."""

    ready: dict[int, dict] = field(default_factory=dict)        # client -> ready event
    progress: dict[tuple[int, int], int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    results: dict[tuple[int, int], dict] = field(default_factory=dict)
    connected: dict[tuple[int, int], dict] = field(default_factory=dict)  # done connecting
    pairs: dict[tuple[int, int], list] = field(default_factory=dict)  # (client, proc) -> pairs
    server_listening: dict | None = None
    server_progress: dict[int, int] = field(default_factory=dict)
    server_results: dict[int, dict] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    died: list[str] = field(default_factory=list)
    churn: ChurnSpool = field(default_factory=ChurnSpool)  # mode churn: per-second counts
    time_wait: list[dict] = field(default_factory=list)   # mode churn: TIME_WAIT samples
    bad: list[str] = field(default_factory=list)  # events refused (engine/protocol.py)

    def take(self, role: str, event: dict) -> None:
        kind = event.get("event")
        if kind != "_closed" and (why := protocol.problem(role, event)) is not None:
            if len(self.bad) < 10:  # the first few say enough; the run fails on the first
                self.bad.append(f"{role}: {why}")
            return
        if kind == "_closed":
            self.closed.add(role)
        elif kind == "time_wait":  # either role, mode churn
            self.time_wait.append(event)
        elif role == "server":
            if kind == "listening":
                self.server_listening = event
            elif kind == "progress":
                self.server_progress[event["worker"]] = event["accepted"]
            elif kind == "result":
                self.server_results[event["worker"]] = event
                self.server_progress[event["worker"]] = event["accepted"]
            elif kind == "worker_exit":  # a server worker died (killed, out of memory)
                self.died.append(faults.worker_exit_reason(
                    "server", event["pid"], event["code"], f"worker {event.get('worker')}"))
        elif kind == "ready":
            self.ready[event["client"]] = event
        elif kind == "connected":  # done connecting, waiting for the held check's signal
            self.connected[(event["client"], event["proc"])] = event
        elif kind == "progress":
            self.progress[(event["client"], event["proc"])] = event["connections"]
            self.samples.append(event)
        elif kind == "result":
            self.results[(event["client"], event["proc"])] = event
            self.progress[(event["client"], event["proc"])] = event["connections"]
        elif kind == "churn":  # the live count follows the connections opened so far
            self.churn.append(event)
            key = (event["client"], event["proc"])
            if key not in self.results:
                self.progress[key] = self.progress.get(key, 0) + event["opened"]
        elif kind == "pairs":  # connections per (source, server address, server port)
            self.pairs.setdefault((event["client"], event["proc"]), []).extend(event["pairs"])
        elif kind == "worker_exit":  # a client process died (out of memory, a crash)
            self.died.append(faults.worker_exit_reason(role, event["pid"], event["code"]))

    @property
    def connections(self) -> int:
        return sum(self.progress.values())

    @property
    def accepted(self) -> int:
        return sum(self.server_progress.values())

    def drain(self, events: queue.Queue, timeout: float) -> None:
        """Take every queued event, waiting up to ``timeout`` for the first."""
        try:
            role, event = events.get(timeout=timeout)
        except queue.Empty:
            return
        self.take(role, event)
        while True:
            try:
                role, event = events.get_nowait()
            except queue.Empty:
                return
            self.take(role, event)
