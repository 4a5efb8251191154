"""The server agent, run as a plain process on loopback: its workers take turns."""

import socket
import time

import pytest

from tcplimits.agents import common, server
from tests.agents.processes import free_port, start_server, stop


def hold(port, count):
    """Open ``count`` connections to ``port`` and keep them; the sockets."""
    held = []
    for _ in range(count):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        held.append(s)
    return held


@pytest.mark.parametrize("syscalls", ["libc", "socket"])
def test_workers_take_turns_each_filling_before_the_next(syscalls, monkeypatch):
    if syscalls == "socket":  # the socket module's path drains the same way
        monkeypatch.setenv(common.SYSCALLS_ENV, "socket")
    else:
        monkeypatch.delenv(common.SYSCALLS_ENV, raising=False)
    port = free_port()
    srv = start_server(port, "--workers", "3", limit=40)  # 40 - 4 descriptors to hold
    held = []
    try:
        held = hold(port, 80)
        time.sleep(0.5)  # the last worker takes what is still queued
    finally:
        got = stop(srv)
        for s in held:
            s.close()
    results = sorted((e["worker"], e["accepted"], e["error"]) for e in got
                     if e["event"] == "result")
    # In turn: worker 1 until it is out of descriptors, then worker 2, then worker 3.
    assert results == [(1, 36, "EMFILE"), (2, 36, "EMFILE"), (3, 8, None)]


def test_a_worker_stopped_before_its_turn_reports_nothing_held():
    port = free_port()
    srv = start_server(port, "--workers", "2")
    got = stop(srv)
    results = sorted((e["worker"], e["accepted"], e["errno"]) for e in got
                     if e["event"] == "result")
    assert results == [(1, 0, None), (2, 0, None)]


def test_connections_gather_only_behind_a_long_accept_queue():
    assert server.batch_wait(4096, 4096) == server.BATCH_WAIT_S
    assert server.batch_wait(server.BATCH_QUEUE, 4096) == server.BATCH_WAIT_S
    # a point about the backlog (config.yaml's 8) is accepted at once; somaxconn caps it
    assert server.batch_wait(8, 4096) == 0.0
    assert server.batch_wait(4096, 128) == 0.0
