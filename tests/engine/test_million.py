"""The million's code paths at a few thousand connections, on the real engine: a loopback
ladder (many processes and workers, several destinations per client, memory per connection
measured, no conntrack entry), the same point on a bridge (one conntrack entry per
connection in the server's namespace and in the host's table), and the live rate."""

import subprocess
import sys

import pytest
from tests.engine.helpers import run_ok


pytestmark = pytest.mark.docker

# A few thousand connections: clients x procs x max_connections per rung.
LADDER = [600, 1800, 3000]


def run(engine, tmp_path, name, **values):
    return run_ok(engine, tmp_path / name, **values)


@pytest.fixture(scope="module")
def ladder(engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ladder")
    # 2 clients x 3 processes; a 2,000-port range so that each client spreads over several
    # loopback destinations (one port pool each), as the million's layout does.
    return [run(engine, tmp, f"million-test-{n}", network="loopback", port_range="30000-31999",
                clients=2, procs=3, nofile=2000, max_connections=n // 6, server_nofile=400)
            for n in LADDER]


def test_loopback_ladder_holds_what_the_model_predicts(ladder):
    for n, record in zip(LADDER, ladder):
        assert record["totals"]["connections"] == record["prediction"]["total"] == n
        assert record["totals"]["server_accepted"] == n
        # many server workers, sharing one listener with exclusive wake-ups
        assert record["resolved"]["server_workers"] >= n * 1.1 / 396
    # the top rung spreads each client over several destinations (a port pool each)
    assert ladder[-1]["prediction"]["terms"]["ports"] >= 3 * 1999


def test_loopback_takes_no_conntrack_entry(ladder):
    for record in ladder:
        assert record["footprint"]["server_namespace_conntrack"] == 0
        assert record["host_limits"] and not any(
            lim["setting"] == "net.netfilter.nf_conntrack_max" for lim in record["host_limits"])


def test_memory_per_connection_is_measured_at_each_rung(ladder):
    if ladder[0]["footprint"].get("kernel_bytes_per_connection") is None:
        pytest.skip("the containers' cgroups are not readable here (engine not local)")
    for record in ladder:
        fp = record["footprint"]
        # two sockets, files, dentries and inodes: a few KB; the agents a few dozen bytes
        assert 1_000 < fp["kernel_bytes_per_connection"] < 20_000
        assert fp["user_bytes_per_connection"] is not None
        assert set(fp["containers_held"]) == {"server", "client1", "client2"}
    # the kernel's share of the containers' memory grows with the connections held
    kernel = [r["footprint"]["kernel_bytes"] for r in ladder]
    assert kernel == sorted(kernel) and kernel[-1] - kernel[0] > 2500 * 1_000


def test_bridge_tracks_one_entry_per_connection_per_namespace(engine, tmp_path):
    record = run(engine, tmp_path, "million-test-bridge", port_range="30000-31999", clients=2,
                 procs=1, nofile=2000, max_connections=600)
    fp = record["footprint"]
    assert record["totals"]["connections"] == 1200
    # Docker's DNS rules turn conntrack on in the server's namespace: one entry each
    assert fp["server_namespace_conntrack"] == 1200
    if fp["host_conntrack_run"] is not None:  # root can read the host's table
        assert fp["host_conntrack_run"] == 1200
    ct = next(lim for lim in record["host_limits"]
              if lim["setting"] == "net.netfilter.nf_conntrack_max")
    assert not ct["binds"] and ct["needed"] >= 1200


def test_live_count_shows_the_rate_in_the_job_log(tmp_path):
    out = tmp_path / "live"
    proc = subprocess.run([sys.executable, "-m", "tcplimits", "run", "--network", "loopback",
                           "--port-range", "30000-30999", "--nofile", "500", "--procs", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    live = [line for line in proc.stderr.splitlines() if line.startswith("connections ")]
    assert live and all("/s; server accepted" in line for line in live)
    # the last line is the final count, in a log as on a terminal
    assert live[-1].startswith("connections 994 ") and live[-1].endswith("stopped 2/2"), live
    assert "clients hold 994 connections" in proc.stdout


def test_probe_reports_the_host_facts_the_model_depends_on():
    import json

    proc = subprocess.run([sys.executable, "-m", "tcplimits", "probe", "--json"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    host = json.loads(proc.stdout)["host"]
    for key in ("fs.file-max", "fs.nr_open", "fs.file-nr", "net.netfilter.nf_conntrack_max",
                "net.ipv4.tcp_mem", "net.ipv4.tcp_max_orphans", "MemAvailable"):
        assert key in host, key
    with open("/proc/sys/fs/file-max") as f:
        assert host["fs.file-max"] == int(f.read())
