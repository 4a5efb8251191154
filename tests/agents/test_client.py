"""The container programs, run as plain processes on loopback: the outcomes they report."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tcplimits.agents import common
from tests.agents.processes import AGENTS, events, free_port, nofile, start_server, stop


def run_client(port, *args, limit=None, hold=0.5, deadline=30.0):
    """Run the client agent for ``hold`` seconds, longer if a process has not written its
    result yet (a cold start on a fresh machine compiles the agents first), up to
    ``deadline``; then stop it and return its events."""
    procs = int(args[args.index("--procs") + 1]) if "--procs" in args else 1
    proc = subprocess.Popen([sys.executable, str(AGENTS / "client.py"), "--server", "127.0.0.1",
                             "--port", str(port), *args], stdout=subprocess.PIPE, text=True,
                            preexec_fn=nofile(limit) if limit else None)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    time.sleep(hold)
    end = time.monotonic() + deadline
    while sum('"event":"result"' in line for line in lines) < procs and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    reader.join(timeout=20)
    return events("".join(lines))


def test_client_stops_at_max_connections_and_server_counts_them():
    port = free_port()
    server = start_server(port, "--workers", "2")
    try:
        out = run_client(port, "--procs", "2", "--max-connections", "300", "--sample-every", "30",
                         hold=2.0)
    finally:
        got = stop(server)
    results = [e for e in out if e["event"] == "result"]
    assert sorted(r["proc"] for r in results) == [1, 2]
    assert all(r["connections"] == 300 and r["error"] == "MAX_CONNECTIONS" for r in results)
    samples = [e for e in out if e["event"] == "progress" and e["proc"] == 1]
    assert [s["connections"] for s in samples] == list(range(30, 301, 30))
    assert all(s["connect_latency_s"] > 0 for s in samples)
    server_results = [e for e in got if e["event"] == "result"]
    assert sum(r["accepted"] for r in server_results) == 600
    assert all(r["errno"] is None for r in server_results)


def test_client_out_of_descriptors_reports_emfile_at_nofile_minus_3():
    port = free_port()
    server = start_server(port)
    try:
        out = run_client(port, limit=64, hold=1.5)
    finally:
        stop(server)
    (result,) = [e for e in out if e["event"] == "result"]
    assert result["error"] == "EMFILE" and result["errno"] == 24
    assert result["connections"] == 64 - 3


def test_server_out_of_descriptors_reports_emfile_and_keeps_running():
    port = free_port()
    server = start_server(port, "--backlog", "4", limit=40)
    try:
        # A SYN dropped while the queue is briefly full is sent again after 1 s: the
        # timeout must outlast that, or a burst on loopback ends the run early.
        out = run_client(port, "--connect-timeout", "2.5", hold=6.0)
    finally:
        got = stop(server)
    (result,) = [e for e in got if e["event"] == "result"]
    assert result["error"] == "EMFILE" and result["accepted"] == 40 - 4
    assert result["accept_errors"] >= 1
    (client,) = [e for e in out if e["event"] == "result"]
    # Accepted + the accept queue (backlog + 1), then the SYN is dropped: a timeout.
    assert client["error"] == "ETIMEDOUT"
    assert 36 + 1 <= client["connections"] <= 36 + 4 + 1


def test_client_without_server_reports_econnrefused():
    out = run_client(free_port(), hold=1.0)
    (result,) = [e for e in out if e["event"] == "result"]
    assert (result["error"], result["connections"]) == ("ECONNREFUSED", 0)


def test_client_waits_for_the_start_signal():
    port = free_port()
    server = start_server(port)
    try:
        proc = subprocess.Popen([sys.executable, str(AGENTS / "client.py"), "--server",
                                 "127.0.0.1", "--port", str(port), "--wait-signal",
                                 "--max-connections", "5"], stdout=subprocess.PIPE, text=True)
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)
        result = json.loads(proc.stdout.readline())
        while result["event"] != "result":
            result = json.loads(proc.stdout.readline())
        assert result["connections"] == 5
        stop(proc)
        assert proc.returncode == 0
    finally:
        stop(server)


def test_tcp_sockets_sees_a_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert ("127.0.0.1", port, "LISTEN") in common.tcp_sockets()
        assert common.is_listening(port)


def test_describe_error():
    import errno

    assert common.describe_error(OSError(errno.EADDRNOTAVAIL, "x"))[:2] == (99, "EADDRNOTAVAIL")
    assert common.describe_error(socket.timeout("timed out"))[:2] == (110, "ETIMEDOUT")


def _pairs(out, proc=1):
    return [tuple(p) for e in out if e["event"] == "pairs" and e["proc"] == proc
            for p in e["pairs"]]


@pytest.mark.parametrize("mode", ["connect", "bind", "bind-no-port"])
def test_client_spreads_round_robin_over_ports_and_sources(mode):
    port = free_port()
    other = free_port()
    server = start_server(f"{port},{other}")
    try:
        out = run_client(f"{port},{other}", "--bind-mode", mode, "--sources",
                         "127.0.0.2", "--max-connections", "12", hold=1.5)
    finally:
        got = stop(server)
    pairs = _pairs(out)
    (result,) = [e for e in out if e["event"] == "result"]
    assert result["connections"] == 12 and result["error"] == "MAX_CONNECTIONS"
    if mode == "connect":  # the route picks the source: one pair per server port
        assert pairs == [("127.0.0.1", "127.0.0.1", port, 6, None),
                         ("127.0.0.1", "127.0.0.1", other, 6, None)]
    else:
        assert pairs == [(s, "127.0.0.1", p, 3, None) for s in ("127.0.0.1", "127.0.0.2")
                         for p in (port, other)]
    assert sum(r["accepted"] for r in got if r["event"] == "result") == 12
    (ready,) = [e for e in out if e["event"] == "ready"]
    assert ready["bind_mode"] == mode and ready["ports"] == [port, other]
    assert set(ready["capabilities"]) >= {"CapEff", "CapBnd"}


def test_client_drops_an_exhausted_pair_and_goes_on():
    port = free_port()
    refused = free_port()  # nothing listens: that pair fails with ECONNREFUSED and stops all
    server = start_server(port)
    try:
        out = run_client(f"{port},{refused}", "--max-connections", "4", hold=1.0)
    finally:
        stop(server)
    (result,) = [e for e in out if e["event"] == "result"]
    assert result["error"] == "ECONNREFUSED" and result["connections"] == 1
    assert _pairs(out) == [("127.0.0.1", "127.0.0.1", port, 1, None),
                           (None, "127.0.0.1", refused, 0, "ECONNREFUSED")]


def test_netaddr_lists_the_namespace_addresses():
    from tcplimits.agents import netaddr

    found = netaddr.addresses()
    assert any(a["addr"] == "127.0.0.1" and a["iface"] == "lo" for a in found)


def test_netaddr_add_without_net_admin_is_refused():
    import os

    from tcplimits.agents import netaddr

    if os.geteuid() == 0:
        pytest.skip("root may hold CAP_NET_ADMIN here")
    with pytest.raises(PermissionError):
        netaddr.add_address("lo", "127.9.9.9", 32)


def _sockets_of(port):
    """States of the loopback TCP sockets with ``port`` at either end (host namespace)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        ends = [int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16)]
        if port in ends and cols[3] != "0A":  # not the listener
            found.append(cols[3])
    return found


@pytest.mark.parametrize("close, lingering", [("abort", False), ("graceful", True)])
def test_stopped_agents_leave_no_socket_behind_unless_closing_gracefully(close, lingering):
    """On SIGTERM the agents reset every connection (SO_LINGER 0): no TIME-WAIT, no orphan.
    A graceful close leaves the side that closed first in TIME-WAIT."""
    port = free_port()
    server = start_server(port, "--close", close)
    try:
        client = subprocess.Popen([sys.executable, str(AGENTS / "client.py"), "--server",
                                   "127.0.0.1", "--port", str(port), "--max-connections", "50",
                                   "--close", close], stdout=subprocess.PIPE, text=True)
        result = json.loads(client.stdout.readline())
        while result["event"] != "result":  # stop it only once it holds its connections
            result = json.loads(client.stdout.readline())
        stop(client)
    finally:
        stop(server)
    assert result["connections"] == 50 and result["cpu_s"] > 0
    left = _sockets_of(port)
    assert bool(left) == lingering, left
    if lingering:
        assert len(left) >= 50


def test_listen_drops_reads_this_namespace_counter():
    from tcplimits.agents import common
    drops = common.listen_drops()
    assert isinstance(drops, int) and drops >= 0


def test_client_waits_for_its_source_addresses_and_says_which_never_came():
    # 127.0.0.1 exists: no wait. 192.0.2.1 (TEST-NET-1) is on no interface here: the client
    # gives up after --wait-sources with the address named, before it connects anywhere.
    port = free_port()
    proc = subprocess.run([sys.executable, str(AGENTS / "client.py"), "--server", "127.0.0.1",
                           "--port", str(port), "--bind-mode", "bind", "--sources",
                           "127.0.0.1,192.0.2.1", "--wait-sources", "0.5"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "source addresses 192.0.2.1 still missing after 0.5 s" in proc.stderr
    assert not events(proc.stdout)  # nothing started
    from tcplimits.agents import client

    t0 = time.monotonic()
    client.wait_for_sources(["127.0.0.1"], 5)
    assert time.monotonic() - t0 < 1
