"""The host's ceiling (issue 22): synthetic host facts, each limit binding in turn."""

import pytest

from tcplimits.config.grid import points
from tcplimits.config.params import ParamError, RunParams
from tcplimits.model import ceiling, hostlimits
from tcplimits.model.ceiling import CeilingError

CAP = 20_000
# The machine issue 22 was written on: fs.file-max binds on loopback, conntrack on a bridge.
HOST = {
    "fs.file-max": 2_466_177, "fs.file-nr": 921,
    "net.netfilter.nf_conntrack_max": 262_144, "net.netfilter.nf_conntrack_count": 560,
    "net.bridge.bridge-nf-call-iptables": 1, "net.ipv4.tcp_max_orphans": 131_072,
    "MemAvailable": 22_746_861_568,
}
GIB = 2**30


def processes(c):
    return c.layout["processes"]


def test_file_max_binds_on_loopback_with_its_headroom():
    c = ceiling.ceiling("loopback", HOST, CAP)
    assert c.binding.name == hostlimits.FILE_MAX and c.binding.errno == "ENFILE"
    n = c.connections
    # The largest count that leaves 1% of fs.file-max to the rest of the host.
    kept = HOST["fs.file-max"] * ceiling.FILE_MAX_HEADROOM
    used = 921 + 2 * n + 4 * processes(c)
    assert used <= HOST["fs.file-max"] - kept < used + 2 + 4
    assert 1_200_000 < n < 1_233_088  # "about 1.23 M": half of fs.file-max, less the headroom
    assert c.next.name == hostlimits.MEMORY and c.margin == c.next.connections - n > 0
    assert c.binding.raise_with.startswith("sysctl -w fs.file-max=")
    # the command lifts fs.file-max past the next limit
    raised = int(c.binding.raise_with.split("=")[1])
    assert raised * (1 - ceiling.FILE_MAX_HEADROOM) >= 2 * c.next.connections
    # no conntrack on loopback
    assert hostlimits.CONNTRACK_MAX not in {b.name for b in c.bounds}


def test_memory_binds_with_its_safety_margin():
    facts = {**HOST, "fs.file-max": 10**8, "MemAvailable": 4 * GIB}
    c = ceiling.ceiling("loopback", facts, CAP)
    assert c.binding.name == hostlimits.MEMORY and c.next.name == hostlimits.FILE_MAX
    usable = 4 * GIB * (1 - hostlimits.MEMORY_HEADROOM)
    n, procs = c.connections, processes(c)
    assert hostlimits.memory_needed(n, procs) <= usable
    assert hostlimits.memory_needed(n + 1, procs) > usable - 2 * hostlimits.PROCESS_BYTES
    # 10% of MemAvailable is never counted on: well below what the memory would hold
    per = hostlimits.KERNEL_BYTES_PER_CONNECTION + hostlimits.USER_BYTES_PER_CONNECTION
    assert n < 0.9 * 4 * GIB / per
    assert "free or add memory" in c.binding.raise_with


def test_conntrack_binds_on_a_bridge_and_counts_what_the_host_table_holds():
    c = ceiling.ceiling("bridge", HOST, CAP)
    assert c.binding.name == hostlimits.CONNTRACK_MAX
    assert c.connections == 262_144 - 560 and c.binding.errno == "ETIMEDOUT"
    assert c.binding.reach == ceiling.STOPS and c.next.name == hostlimits.FILE_MAX
    assert c.binding.raise_with == "sysctl -w net.netfilter.nf_conntrack_max=1300000"
    # one port pool per client container on a bridge: enough containers for the count
    assert c.layout["clients"] * 64_511 >= c.connections


def test_the_engine_nofile_cap_seen_through_a_few_processes_binds_a_point():
    point = RunParams(network="loopback", clients=1, procs=2, nofile=CAP,
                      port_range="1024-65535", connections="ceiling")
    c = ceiling.ceiling("loopback", HOST, CAP, point=point)
    assert c.binding.name == "layout: descriptors" and c.binding.errno == "EMFILE"
    assert c.connections == 2 * (CAP - 3)
    run, record = ceiling.resolve(point, HOST, CAP)
    # the limit ends the run by itself: no share
    assert record["held_by"] == "limit" and run.max_connections is None
    assert run.connections == record["connections"] == 2 * (CAP - 3)


def test_a_host_wide_limit_is_held_below_by_shares():
    point = RunParams(network="loopback", clients=7, procs=10, nofile=CAP,
                      port_range="1024-65535", connections="ceiling")
    run, record = ceiling.resolve(point, HOST, CAP)
    assert record["predicted"]["binding"]["name"] == hostlimits.FILE_MAX
    assert record["held_by"] == "share" and run.connections == record["connections"]
    held = 70 * run.max_connections
    assert record["connections"] - 70 < held <= record["connections"]
    # and the run's own refusal check passes it
    limits = hostlimits.host_limits(run, HOST, held, record["predicted"]["layout"]
                                    ["server_workers"])
    assert hostlimits.refusal(limits) is None


def test_a_number_is_spread_over_the_processes_and_refused_past_a_limit():
    point = RunParams(network="loopback", clients=2, procs=5, nofile=CAP,
                      port_range="1024-65535", connections=50_005)
    run, record = ceiling.resolve(point, HOST, CAP)
    assert (run.connections, run.max_connections, record["asked"]) == (50_005, 5_000, 50_005)
    big = RunParams(network="loopback", clients=32, procs=64, nofile=CAP,
                    port_range="1024-65535", connections=5_000_000)
    run, _ = ceiling.resolve(big, HOST, CAP)
    limits = hostlimits.host_limits(run, HOST, 5_000_000 // 2048 * 2048, 300)
    assert "fs.file-max" in hostlimits.refusal(limits)


def test_without_host_facts_the_ceiling_is_not_guessed():
    point = RunParams(network="loopback", connections="ceiling")
    with pytest.raises(CeilingError, match="engine"):
        ceiling.resolve(point, None, CAP)
    assert ceiling.resolve(RunParams(), None, CAP) == (RunParams(), None)


def test_connections_takes_a_number_or_ceiling_only():
    assert RunParams.from_mapping({"connections": "Ceiling"}).connections == "ceiling"
    with pytest.raises(ParamError, match="ceiling"):
        RunParams.from_mapping({"connections": "max"})
    pts = points({"points": [{"network": "loopback", "connections": "ceiling"}]})
    assert pts[0].id.endswith("connectionsceiling_networkloopback")


def test_largest_finds_the_edge():
    assert ceiling.largest(lambda n: n <= 12_345, 10**9) == 12_345
    assert ceiling.largest(lambda n: False, 10) == 0


def test_the_layout_proposed_holds_the_count_within_the_engine_cap():
    for n in (1, 19_997, 1_220_000, 5_000_000):
        p = ceiling.layout_for(n, "loopback", CAP)
        assert p.nofile == CAP and p.clients * p.procs * p.max_connections >= n
        assert p.max_connections <= CAP - 3
