"""The held check (issue 21): a connection counts as held only while it is established."""

import socket
import threading
import time

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


def test_closed_with_a_message_are_not_held_and_the_message_is_kept():
    listener, kept = _pair_server(3, b"-ERR max number of clients reached\r\n")
    fds = _open(listener.getsockname()[1], 5)
    try:
        closed, message = _wait_closed(fds, 2)
        assert closed == [3, 4]
        assert message == "-ERR max number of clients reached\r\n"
    finally:
        common.close_all(fds)
        listener.close()


def test_all_established_changes_no_count():
    listener, kept = _pair_server(10)
    fds = _open(listener.getsockname()[1], 4)
    try:
        time.sleep(0.2)
        assert common.check_held(fds) == ([], None)
    finally:
        common.close_all(fds)
        listener.close()


def test_a_close_without_data_counts_as_closed_without_a_message():
    listener, kept = _pair_server(0)
    fds = _open(listener.getsockname()[1], 1)
    try:
        closed, message = _wait_closed(fds, 1)
        assert closed == [0] and message is None
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
