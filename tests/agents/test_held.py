"""The held check (issue 21): a connection counts as held only while it is established."""

import socket
import threading
import time

import pytest

from tcplimits.agents import common


def _pair_server(close_after, message=b""):
    """A loopback listener that keeps its first ``close_after`` connections and answers every
    later one with ``message`` and a close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    kept = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if len(kept) < close_after:
                kept.append(conn)
            else:
                if message:
                    conn.sendall(message)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, kept


def _open(port, n):
    fds = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        fds.append(s.detach())
    return fds


def _wait_closed(fds, expected, seconds=5.0):
    end = time.monotonic() + seconds
    while True:
        closed, message = common.check_held(fds)
        if len(closed) >= expected or time.monotonic() > end:
            return closed, message
        time.sleep(0.05)


@pytest.mark.parametrize("keep, opened, message, closed", [
    # past what the server keeps: closed, its message unread in the client's buffer (Redis)
    (3, 5, b"-ERR max number of clients reached\r\n", [3, 4]),
    (10, 4, b"", []),  # all established: no count changes
    (0, 1, b"", [0]),  # closed without a word (nginx)
])
@pytest.mark.parametrize("syscalls", ["libc", "socket"])
def test_held_means_established_and_the_peers_first_bytes_are_kept(keep, opened, message,
                                                                   closed, syscalls, monkeypatch):
    if syscalls == "socket":
        monkeypatch.setenv(common.SYSCALLS_ENV, "socket")
    listener, kept = _pair_server(keep, message)
    fds = _open(listener.getsockname()[1], opened)
    try:
        if not closed:
            time.sleep(0.2)
        got, said = _wait_closed(fds, len(closed)) if closed else common.check_held(fds)
        assert got == closed
        assert said == (message.decode() if message else None)
    finally:
        common.close_all(fds)
        listener.close()


def test_with_check_signal_the_client_checks_only_when_told():
    import json
    import signal
    import subprocess
    import sys
    from pathlib import Path

    listener, kept = _pair_server(2, b"-ERR full\r\n")
    client = Path(common.__file__).with_name("client.py")
    proc = subprocess.Popen([sys.executable, str(client), "--server", "127.0.0.1", "--port",
                             str(listener.getsockname()[1]), "--max-connections", "5",
                             "--check-signal", "--settle", "0.2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = iter(proc.stdout.readline, "")
        events = []
        for line in lines:
            events.append(json.loads(line))
            if events[-1]["event"] == "connected":
                break
        assert events[-1]["opened"] == 5
        assert not any(e["event"] == "result" for e in events)
        proc.send_signal(signal.SIGUSR2)
        for line in lines:
            events.append(json.loads(line))
            if events[-1]["event"] == "result":
                break
        result = events[-1]
        assert (result["connections"], result["opened"], result["closed_by_peer"]) == (2, 5, 3)
        assert result["peer_message"] == "-ERR full\r\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        listener.close()
