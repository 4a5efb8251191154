"""The agents' hold loops through libc (common.libc_connector, server.acceptor) and through
the socket module (TCPLIMITS_AGENT_SYSCALLS=socket, or no ctypes): the same descriptors, the
same errors, the same events."""

import errno
import socket

import pytest

from tcplimits.agents import common, server
from tests.agents.processes import free_port, start_server, stop
from tests.agents.test_client import run_client

TIMEVAL = common.timeval(2.0)


@pytest.fixture(autouse=True)
def _libc_unless_told(monkeypatch):
    """These tests ask for a path themselves, whatever the environment says."""
    monkeypatch.delenv(common.SYSCALLS_ENV, raising=False)


def test_libc_is_there_unless_the_socket_module_is_asked_for(monkeypatch):
    assert common.load_libc() is not None
    monkeypatch.setenv(common.SYSCALLS_ENV, "socket")
    assert common.load_libc() is None


def test_sockaddr_in_is_what_the_kernel_takes():
    raw = common.sockaddr_in("127.1.2.3", 5000)
    assert len(raw) == 16
    assert int.from_bytes(raw[:2], "little") == socket.AF_INET
    assert raw[2:4] == (5000).to_bytes(2, "big") and raw[4:8] == bytes([127, 1, 2, 3])


def test_connector_and_acceptor_hand_over_connected_descriptors():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)  # as the server agent's listeners are
        port = listener.getsockname()[1]
        connect_run = common.libc_connector(common.load_libc(), TIMEVAL,
                                            [common.sockaddr_in("127.0.0.1", port)])
        drain = server.acceptor(listener)
        held, owner = [], []
        made, last, failure = connect_run([0], 0, 1, held.append, owner.append)
        assert (made, failure, owner) == (1, None, [0]) and last > 0
        fd = held[0]
        accepted = []
        assert drain(accepted.append) is None  # the queue drained, nothing wrong
        [conn] = accepted
        with socket.socket(fileno=fd) as mine, socket.socket(fileno=conn) as theirs:
            assert mine.getpeername() == ("127.0.0.1", port)
            assert theirs.getpeername() == mine.getsockname()
            assert mine.gettimeout() is None  # blocking, bounded by SO_SNDTIMEO
            assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16) == TIMEVAL
            assert not mine.get_inheritable()  # SOCK_CLOEXEC, as the socket module makes them


def test_connector_stops_at_what_common_connect_raises():
    port = free_port()  # nothing listens
    connect_run = common.libc_connector(common.load_libc(), TIMEVAL,
                                        [common.sockaddr_in("127.0.0.1", port)])
    held = []
    made, last, failure = connect_run([0], 0, 5, held.append, held.append)
    assert (made, last, held) == (0, None, [])
    assert isinstance(failure, ConnectionRefusedError)
    assert common.describe_error(failure)[:2] == (errno.ECONNREFUSED, "ECONNREFUSED")
    # A handshake cut short by SO_SNDTIMEO is ETIMEDOUT, as common.connect says it.
    for number in common.TIMED_OUT_ERRNOS:
        exc = common.connect_error(number)
        assert isinstance(exc, TimeoutError)
        assert common.describe_error(exc)[:2] == (errno.ETIMEDOUT, "ETIMEDOUT")


def test_acceptor_with_nothing_queued_takes_nothing_and_says_nothing():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)  # as the server agent's listeners are
        accepted = []
        assert server.acceptor(listener)(accepted.append) is None
        assert accepted == []


@pytest.mark.parametrize("syscalls", ["libc", "socket"])
def test_both_paths_report_the_same_events(syscalls, monkeypatch):
    if syscalls == "socket":
        monkeypatch.setenv(common.SYSCALLS_ENV, "socket")
    port = free_port()
    srv = start_server(port, "--workers", "2")
    try:
        out = run_client(port, "--procs", "2", "--max-connections", "250", "--sample-every",
                         "50", hold=2.0)
    finally:
        got = stop(srv)
    results = [e for e in out if e["event"] == "result"]
    assert sorted((r["proc"], r["connections"], r["opened"], r["error"]) for r in results) \
        == [(1, 250, 250, "MAX_CONNECTIONS"), (2, 250, 250, "MAX_CONNECTIONS")]
    samples = [e for e in out if e["event"] == "progress" and e["proc"] == 2]
    assert [s["connections"] for s in samples] == [50, 100, 150, 200, 250]
    assert all(0 < s["connect_latency_s"] < 1 for s in samples)
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    pairs = [p for e in out if e["event"] == "pairs" for p in e["pairs"]]
    assert pairs == [["127.0.0.1", "127.0.0.1", port, 250, None]] * 2
    server_results = [e for e in got if e["event"] == "result"]
    assert sum(r["accepted"] for r in server_results) == 500
    assert all(r["errno"] is None and r["cpu_s"] > 0 for r in server_results)


@pytest.mark.parametrize("mode, lingering", [("abort", False), ("graceful", True)])
def test_close_all_through_libc_resets_or_closes(mode, lingering):
    """abort: RST, the peer sees ECONNRESET and nothing lingers; graceful: FIN, an orderly
    end of stream."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        mine = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
        with theirs:
            common.close_all([mine.detach()], mode)
            if lingering:
                assert theirs.recv(10) == b""
            else:
                with pytest.raises(ConnectionResetError):
                    theirs.recv(10)


def test_a_run_goes_round_robin_from_its_turn_and_stops_at_the_first_failure():
    """Three pairs, the second refusing: a run from position 2 makes the third pair's and
    the first pair's connection, then stops on the second with what connect() said."""
    with socket.socket() as first, socket.socket() as third:
        for listener in (first, third):
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
        ports = [first.getsockname()[1], free_port(), third.getsockname()[1]]
        connect_run = common.libc_connector(
            common.load_libc(), TIMEVAL, [common.sockaddr_in("127.0.0.1", p) for p in ports])
        held, owner = [], []
        try:
            made, _, failure = connect_run([0, 1, 2], 2, 10, held.append, owner.append)
            assert (made, owner) == (2, [2, 0])
            assert isinstance(failure, ConnectionRefusedError)
            # the refusing pair dropped, a run wraps around what is left
            made, _, failure = connect_run([0, 2], 1, 3, held.append, owner.append)
            assert (made, failure, owner) == (3, None, [2, 0, 2, 0, 2])
        finally:
            common.close_all(held)
