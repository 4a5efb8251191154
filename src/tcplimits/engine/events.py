"""What the agents say: each container's output followed in a thread, its JSON lines queued as
events, and the run's state as the engine has heard it so far."""

from __future__ import annotations

import json
import queue
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

from tcplimits.engine import faults

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LogReader(threading.Thread):
    """Follows one container's output: keeps the text, queues each JSON event."""

    def __init__(self, container, role: str, events: queue.Queue):
        super().__init__(daemon=True, name=f"logs-{role}")
        self.container, self.role, self.events = container, role, events
        self.lines: list[str] = []

    def run(self) -> None:
        buffer = b""
        try:
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._line(raw.decode(errors="replace"))
        except Exception as err:  # the container was removed under us: end quietly
            self.lines.append(f"[tcplimits: log stream ended: {err}]")
        if buffer:
            self._line(buffer.decode(errors="replace"))
        self.events.put((self.role, {"event": "_closed"}))

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("{"):
            try:
                self.events.put((self.role, json.loads(line)))
            except json.JSONDecodeError:
                pass


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
    churn: list[dict] = field(default_factory=list)       # mode churn: per-second counts
    time_wait: list[dict] = field(default_factory=list)   # mode churn: TIME_WAIT samples

    def take(self, role: str, event: dict) -> None:
        kind = event.get("event")
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
