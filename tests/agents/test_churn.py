"""The churn loop of the agents, run as plain processes: on the host's loopback, and in a
fresh network namespace (unshare -n, when allowed) where the port range and tcp_tw_reuse are
ours to set and the TIME_WAIT count is exactly what the loop left."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.processes import AGENTS, events, free_port, start_server, stop

from tcplimits.agents import churn


def churn_client(port, *args):
    return subprocess.Popen([sys.executable, str(AGENTS / "client.py"), "--server", "127.0.0.1",
                             "--port", str(port), "--mode", "churn", *args],
                            stdout=subprocess.PIPE, text=True)


def until_result(proc, count=1):
    """Read the client's lines until ``count`` result lines, then stop it."""
    lines = []
    results = 0
    while results < count:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        results += '"event":"result"' in line
    return events("".join(lines)) + stop(proc)


def test_paced_churn_opens_at_the_rate_and_the_server_answers_each():
    port = free_port()
    server = start_server(port, "--churn")
    try:
        out = until_result(churn_client(port, "--rate", "100", "--duration", "2",
                                        "--closer", "server"))
    finally:
        got = stop(server)
    (result,) = [e for e in out if e["event"] == "result"]
    assert result["error"] == "DURATION" and result["errno"] is None
    assert 190 <= result["connections"] <= 201
    seconds = [e for e in out if e["event"] == "churn"]
    assert [s["second"] for s in seconds] == [0, 1]
    assert all(95 <= s["opened"] <= 101 and s["errors"] == 0 for s in seconds)
    assert sum(s["opened"] for s in seconds) == result["connections"]
    assert any(e["event"] == "time_wait" and e["role"] == "client" for e in out)
    assert any(e["event"] == "time_wait" and e["role"] == "server" for e in got)
    (served,) = [e for e in got if e["event"] == "result"]
    assert served["accepted"] == result["connections"]


def test_churn_without_server_stops_at_once_with_econnrefused():
    out = until_result(churn_client(free_port(), "--rate", "max", "--duration", "5"))
    (result,) = [e for e in out if e["event"] == "result"]
    assert (result["connections"], result["error"]) == (0, "ECONNREFUSED")
    (second,) = [e for e in out if e["event"] == "churn"]
    assert (second["opened"], second["errors"], second["error"]) == (0, 1, "ECONNREFUSED")


# --------------------------------------------------------------------------- own namespace

NETNS = shutil.which("unshare") and subprocess.run(
    ["unshare", "-n", "true"], capture_output=True).returncode == 0
needs_netns = pytest.mark.skipif(not NETNS, reason="cannot create a network namespace here")

SCRIPT = """
set -e
ip link set lo up
echo "{lo} {hi}" > /proc/sys/net/ipv4/ip_local_port_range
echo {reuse} > /proc/sys/net/ipv4/tcp_tw_reuse
{py} {agents}/server.py --port 5000 --churn > {tmp}/server.out &
server=$!
until {py} {agents}/server.py --port 5000 --check; do sleep 0.1; done
{py} {agents}/client.py --server 127.0.0.1 --port 5000 --mode churn --rate {rate} \\
    --duration {duration} --closer {closer} > {tmp}/client.out &
client=$!
sleep {wait}
kill -TERM $client $server
wait
"""


def in_netns(tmp_path, *, rate, duration, closer, reuse, wait, ports=(40000, 40099)):
    """Server and churning client in a fresh namespace, on loopback. Returns (client
    events, server events)."""
    if not shutil.which("ip"):
        pytest.skip("no `ip` to bring loopback up")
    script = SCRIPT.format(lo=ports[0], hi=ports[1], reuse=reuse, py=sys.executable,
                           agents=AGENTS, tmp=tmp_path, rate=rate, duration=duration,
                           closer=closer, wait=wait)
    subprocess.run(["unshare", "-n", "sh", "-c", script], check=True, timeout=wait + 30)
    return (events((tmp_path / "client.out").read_text()),
            events((tmp_path / "server.out").read_text()))


@needs_netns
def test_client_closes_without_reuse_stops_at_the_range_with_eaddrnotavail(tmp_path):
    out, _ = in_netns(tmp_path, rate="max", duration=10, closer="client", reuse=0, wait=2)
    (result,) = [e for e in out if e["event"] == "result"]
    assert (result["connections"], result["error"], result["errno"]) == (100, "EADDRNOTAVAIL", 99)
    assert result["elapsed_s"] < 5
    # every port of the range sits in TIME_WAIT (the server's ends closed second: none)
    assert max(e["time_wait"] for e in out if e["event"] == "time_wait") == 100


@needs_netns
def test_client_closes_with_reuse_below_range_per_delay_does_not_stop(tmp_path):
    # 100 ports reusable 1 s (tcp_tw_reuse_delay) after their close: 50/s stays below that
    out, _ = in_netns(tmp_path, rate=50, duration=4, closer="client", reuse=1, wait=5)
    (result,) = [e for e in out if e["event"] == "result"]
    assert result["error"] == "DURATION"  # never EADDRNOTAVAIL, though 200 > 100 ports
    assert 150 <= result["connections"] <= 201  # a loaded host may slow the paced loop


@needs_netns
def test_server_closes_first_leaves_time_wait_on_the_server_and_the_client_goes_on(tmp_path):
    out, got = in_netns(tmp_path, rate="max", duration=3, closer="server", reuse=0, wait=4)
    (result,) = [e for e in out if e["event"] == "result"]
    assert result["error"] == "DURATION"
    assert result["connections"] > 300  # three times the range, in three seconds at least
    (served,) = [e for e in got if e["event"] == "result"]
    assert served["accepted"] == result["connections"]
    # one namespace here: the TIME_WAIT sockets are the server's, bounded by the 4-tuples
    assert 0 < max(e["time_wait"] for e in got if e["event"] == "time_wait") <= 100


def test_time_wait_count_reads_a_number():
    assert churn.time_wait_count() >= 0


def test_a_server_that_never_answers_times_out_with_etimedout():
    import socket

    with socket.socket() as silent:  # listens, never accepts nor answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        out = until_result(churn_client(port, "--rate", "max", "--duration", "5",
                                        "--connect-timeout", "0.5"))
    (result,) = [e for e in out if e["event"] == "result"]
    assert (result["connections"], result["error"], result["errno"]) == (0, "ETIMEDOUT", 110)
    assert 0.4 < result["elapsed_s"] < 2
