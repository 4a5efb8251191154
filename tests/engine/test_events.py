"""What the agents say, taken with bounded memory: events checked field by field (a bad one
is refused and remembered, never a traceback), logs spooled, churn seconds spooled."""

from __future__ import annotations

import queue
import tracemalloc

import pytest

from tcplimits.engine import events
from tcplimits.engine.events import ChurnSpool, LogReader, RunState

RESULT = {"event": "result", "client": 2, "proc": 1, "connections": 5, "errno": 99,
          "error": "EADDRNOTAVAIL", "message": "x", "elapsed_s": 0.5, "cpu_s": 0.1}


@pytest.mark.parametrize("role, event, why", [
    ("client2", {**RESULT, "connections": "5"}, "result event: connections is '5'"),
    ("client2", {k: v for k, v in RESULT.items() if k != "proc"}, "result event: proc is missing"),
    ("client2", {**RESULT, "client": 5}, "client is 5, but it came from client 2's container"),
    ("client2", {**RESULT, "client": True}, "client is True, but it came from client 2's"),
    ("client2", {**RESULT, "elapsed_s": float("nan")}, "result event: elapsed_s is nan"),
    ("client2", {"event": "ready", "client": 2, "held": [{"port": "x"}]}, "ready event: held"),
    ("client2", {"event": "pairs", "client": 2, "proc": 1, "pairs": [[None, "a", 1, 2]]},
     "pairs event: pairs is"),
    ("server", {"event": "progress", "worker": -1, "accepted": 3}, "progress event: worker is -1"),
    ("server", {"event": "result", "worker": 1, "accepted": None}, "accepted is None"),
])
def test_a_bad_event_is_refused_and_remembered(role, event, why):
    state = RunState()
    state.take(role, event)
    assert len(state.bad) == 1 and state.bad[0].startswith(f"{role}: ") and why in state.bad[0]
    assert not (state.results or state.progress or state.server_results or state.ready
                or state.pairs or state.server_progress)


def test_good_events_and_unknown_kinds_are_taken():
    state = RunState()
    state.take("client2", RESULT)
    state.take("client2", {"event": "something-newer", "client": 2})
    state.take("server", {"event": "result", "worker": 1, "accepted": 5, "errno": None,
                          "error": None, "message": None, "accept_errors": 0,
                          "conntrack": None, "listen_drops": 0})
    assert state.bad == [] and state.results[(2, 1)]["connections"] == 5
    assert state.server_results[1]["accepted"] == 5


class _Container:
    def __init__(self, chunks):
        self.chunks = chunks

    def logs(self, **_):
        yield from self.chunks()


def _read(chunks, tmp_path):
    reader = LogReader(_Container(chunks), "client1", queue.Queue())
    tracemalloc.start()
    try:
        reader.run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    reader.save(tmp_path / "client1.log")
    return reader, peak, (tmp_path / "client1.log").read_text()


def test_a_line_without_end_is_cut_not_buffered(tmp_path, monkeypatch):
    monkeypatch.setattr(events, "MAX_LINE_BYTES", 2**20)

    def chunks():
        yield b"before\n"
        for _ in range(64):  # 64 MiB, no newline
            yield b"x" * 2**20
        yield b"\n" + RESULT_LINE + b"\n"

    reader, peak, text = _read(chunks, tmp_path)
    assert peak < 8 * 2**20, peak
    lines = text.splitlines()
    assert lines[0] == "before" and lines[1].endswith("[tcplimits: line cut at 1,048,576 bytes]")
    assert lines[2] == RESULT_LINE.decode() and len(lines) == 3
    assert reader.events.get_nowait()[1]["event"] == "result"


RESULT_LINE = b'{"event": "result", "client": 1, "proc": 1, "connections": 1}'


def test_a_log_is_spooled_and_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(events, "LOG_KEEP_BYTES", 1000)
    reader, peak, text = _read(lambda: (f"line {i}\n".encode() for i in range(100_000)),
                               tmp_path)
    lines = text.splitlines()
    assert lines[0] == "line 0" and lines[-1] == "line 99999"
    kept = lines.index(next(line for line in lines if line.startswith("[tcplimits:")))
    assert lines[kept] == (f"[tcplimits: {100_000 - kept - events.TAIL_LINES:,} lines not kept "
                           f"(the log is bounded at 1,000 bytes); the last 200:]")
    assert len(lines) == kept + 1 + events.TAIL_LINES
    assert peak < 2 * 2**20, peak


def test_churn_seconds_are_spooled_and_read_back_on_every_pass():
    spool = ChurnSpool()
    tracemalloc.start()
    try:
        for i in range(100_000):
            spool.append({"client": 1 + i % 32, "proc": 1 + i % 64, "second": i // 2048,
                          "opened": i, "errors": int(i == 99_999),
                          "error": "EADDRNOTAVAIL" if i == 99_999 else None,
                          "connect_latency_s": None if i % 2 else 0.25})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, peak  # as dicts: ~100 MB
    for _ in range(2):
        rows = list(spool)
        assert len(rows) == len(spool) == 100_000
        assert rows[3] == {"client": 4, "proc": 4, "second": 0.0, "opened": 3, "errors": 0,
                           "error": None, "connect_latency_s": None}
        assert rows[4]["connect_latency_s"] == 0.25
        assert rows[-1]["error"] == "EADDRNOTAVAIL" and rows[-1]["errors"] == 1
