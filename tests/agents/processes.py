"""The agents run as plain processes on loopback: starting, stopping and reading them (shared by
the agents' tests)."""

import json
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

AGENTS = Path(__file__).resolve().parents[2] / "src" / "tcplimits" / "agents"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def nofile(n):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def start_server(port, *args, limit=None):  # port: one or "p1,p2"
    proc = subprocess.Popen([sys.executable, str(AGENTS / "server.py"), "--port", str(port), *args],
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=nofile(limit) if limit else None)
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "listening"
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return events(out)
