"""Host-wide limits, loopback addressing and the footprint readers (pure logic, fake /proc)."""

import pytest
import yaml

from tcplimits.engine import footprint
from tcplimits.model import hostlimits
from tcplimits import model
from tcplimits.engine import HARDENING, compose_file, container_specs
from tcplimits.engine.plan import Resolved, memory_limit
from tcplimits.config.params import ParamError, RunParams

# This host as `tcplimits probe` read it (values of the machine issue 10 was written on).
HOST = {
    "fs.file-max": 2_466_177, "fs.nr_open": 1_048_576, "fs.file-nr": 60_000,
    "net.netfilter.nf_conntrack_max": 262_144, "net.netfilter.nf_conntrack_count": 30_000,
    "net.bridge.bridge-nf-call-iptables": 1, "net.ipv4.tcp_max_orphans": 131_072,
    "net.ipv4.tcp_mem": [287_901, 383_868, 575_802], "MemAvailable": 22 * 2**30,
}
MILLION = dict(port_range="1024-65535", clients=10, procs=6, nofile=20000,
               max_connections=16667)


def by_setting(limits):
    return {lim.setting: lim for lim in limits}


def test_network_is_a_choice_named_in_errors():
    assert RunParams(network="Loopback").network == "loopback"
    with pytest.raises(ParamError, match="network.*bridge, loopback"):
        RunParams.from_mapping({"network": "host"})


def test_bridge_million_stops_at_conntrack_room_and_says_how_to_pass_it():
    params = RunParams(**MILLION)
    limits = by_setting(hostlimits.host_limits(params, HOST, 1_000_020, 57))
    ct = limits["net.netfilter.nf_conntrack_max"]
    assert ct.stops_at == 262_144 - 30_000 and ct.errno == "ETIMEDOUT"
    assert ct.needed == 30_000 + 1_000_020
    assert ct.command == "sysctl -w net.netfilter.nf_conntrack_max=1100000"
    assert "--network loopback" in ct.way_around
    text = ct.sentence()
    assert "262,144" in text and "1,030,020" in text and "232,144" in text and "sysctl -w" in text
    assert hostlimits.binding(list(limits.values())) is ct
    # The model predicts that stop, with the errno the clients will see.
    pred = model.predict(params, server_nofile=20000, server_workers=57,
                         conntrack_max=262_144, host_facts=HOST)
    assert (pred.total, pred.limit, pred.errno) == (232_144, model.CONNTRACK, "ETIMEDOUT")


def test_without_bridge_netfilter_only_the_server_namespace_tracks():
    params = RunParams(**MILLION)
    host = {**HOST, "net.bridge.bridge-nf-call-iptables": 0}
    ct = by_setting(hostlimits.host_limits(params, host, 1_000_020, 57))[
        "net.netfilter.nf_conntrack_max"]
    assert ct.stops_at == 262_144 and ct.needed == 1_000_020


def test_loopback_million_meets_no_conntrack_and_fits_the_host():
    params = RunParams(**MILLION, network="loopback")
    limits = hostlimits.host_limits(params, HOST, 1_000_020, 57)
    assert "net.netfilter.nf_conntrack_max" not in by_setting(limits)
    assert hostlimits.refusal(limits) is None and hostlimits.binding(limits) is None
    pred = model.predict(params, server_nofile=20000, server_workers=57, held_ports=[1] * 10,
                         conntrack_max=262_144, host_facts=HOST)
    assert pred.total == 1_000_020 and pred.limit == model.MAX_CONNECTIONS
    fmax = by_setting(limits)["fs.file-max"]
    assert fmax.needed == 60_000 + 2 * 1_000_020 and not fmax.binds


def test_points_that_would_exhaust_the_host_are_refused_with_the_setting():
    params = RunParams(**MILLION, network="loopback")
    small = {**HOST, "fs.file-max": 1_000_000, "MemAvailable": 4 * 2**30}
    reason = hostlimits.refusal(hostlimits.host_limits(params, small, 1_000_020, 57))
    assert "fs.file-max is 1,000,000" in reason and "sysctl -w fs.file-max=2100000" in reason
    assert "MemAvailable" in reason and "not run" in reason


def test_tcp_mem_never_binds_idle_connections_and_reset_connections_leave_no_orphans():
    limits = by_setting(hostlimits.host_limits(RunParams(network="loopback"), HOST,
                                               1_000_000, 57))
    assert not limits["net.ipv4.tcp_mem"].binds
    orphans = limits["net.ipv4.tcp_max_orphans"]
    assert orphans.effect == "teardown" and orphans.needed == 0 and not orphans.binds
    assert hostlimits.binding(list(limits.values())) is None


def test_loopback_spreads_over_enough_destinations_to_keep_pools_a_quarter_full():
    params = RunParams(**MILLION, network="loopback")
    n = model.destinations(params)
    per_client = 6 * 16667
    assert per_client / n <= hostlimits_pool(params) * model.LOOPBACK_POOL_FILL
    assert per_client / (n - 1) > hostlimits_pool(params) * model.LOOPBACK_POOL_FILL
    assert model.destinations(RunParams(**MILLION)) == 1
    addrs = [a for c in range(1, 11) for a in model.loopback_destinations(c, n)]
    assert len(set(addrs)) == len(addrs) and "127.0.0.1" not in addrs
    assert all(a.startswith("127.") and all(0 <= int(x) <= 255 for x in a.split("."))
               for a in addrs)
    # the ports term counts one pool per destination
    assert model.client_terms(params, 1)[1][model.PORTS] == n * (64512 - 1)


def hostlimits_pool(params):
    return params.port_count - 1


def test_loopback_specs_share_the_servers_namespace_with_least_privilege():
    params = RunParams(network="loopback", clients=2, procs=2, nofile=1000,
                       port_range="20000-29999")
    resolved = Resolved.of(params, 20000)
    specs = container_specs(params, resolved, "r1", "img", "net-r1", {"tcplimits": "1"}, "i1")
    server = specs["server"]
    assert server["network_mode"] == "none" and "network" not in server
    # the one namespace's sysctls: the port range and every sysctl field (tcp_tw_reuse, ...)
    assert server["sysctls"] == params.client_sysctls()
    assert server["sysctls"]["net.ipv4.ip_local_port_range"] == "20000 29999"
    for role in ("client1", "client2"):
        spec = specs[role]
        assert spec["network_mode"] == f"container:{server['name']}"
        assert "sysctls" not in spec and "hostname" not in spec and "network" not in spec
        servers = spec["command"][spec["command"].index("--server") + 1].split(",")
        assert servers == model.loopback_destinations(int(role[-1]), model.destinations(params))
    for spec in specs.values():
        for key, value in HARDENING.items():
            assert spec[key] == value
    doc = yaml.safe_load(compose_file(specs, "r1"))
    assert doc["services"]["server"]["network_mode"] == "none"
    assert doc["services"]["client1"]["network_mode"] == "service:server"
    assert "networks" not in doc


def test_memory_limits_leave_room_for_every_connection_held():
    assert memory_limit(100_000, 6) >= 100_000 * hostlimits.KERNEL_BYTES_PER_CONNECTION


# --- footprint readers on a fake /proc and cgroup tree -------------------------------------

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_proc(root, *, count=100, slab_kb=1000, tcp_mem=10, alloc=50):
    write(root / "sys/fs/file-max", "2466177\n")
    write(root / "sys/fs/file-nr", "1088\t0\t2466177\n")
    write(root / "sys/net/netfilter/nf_conntrack_max", "262144\n")
    write(root / "sys/net/netfilter/nf_conntrack_count", f"{count}\n")
    write(root / "sys/net/ipv4/tcp_mem", "287901\t383868\t575802\n")
    write(root / "meminfo", f"MemTotal: 24000000 kB\nMemAvailable: 20000000 kB\n"
                            f"Slab: {slab_kb} kB\n")
    write(root / "net/sockstat", f"sockets: used 1\nTCP: inuse 1 orphan 0 tw 2 alloc {alloc} "
                                 f"mem {tcp_mem}\nUDP: inuse 0 mem 0\n")
    return root


def test_host_facts_read_every_setting_and_tolerate_missing_ones(tmp_path):
    facts = footprint.host_facts(fake_proc(tmp_path))
    assert facts["fs.file-max"] == 2_466_177 and facts["fs.file-nr"] == 1088
    assert facts["net.ipv4.tcp_mem"] == [287_901, 383_868, 575_802]
    assert facts["MemAvailable"] == 20_000_000 * 1024
    assert facts["sockstat_tcp"]["alloc"] == 50
    assert facts["net.bridge.bridge-nf-call-iptables"] is None  # br_netfilter not loaded


def test_container_memory_v1_and_v2(tmp_path):
    v1 = tmp_path / "memory/docker/abc"
    write(v1 / "memory.stat", "cache 10\nrss 300\n")
    write(v1 / "memory.usage_in_bytes", "1000\n")
    write(v1 / "memory.kmem.usage_in_bytes", "600\n")
    assert footprint.container_memory("abc", tmp_path) == {"total": 1000, "kernel": 600,
                                                          "user": 300}
    v2 = tmp_path / "system.slice/docker-def.scope"
    write(v2 / "memory.stat", "anon 200\nkernel 500\nsock 40\n")
    write(v2 / "memory.current", "900\n")
    assert footprint.container_memory("def", tmp_path) == {"total": 900, "kernel": 540,
                                                          "user": 200}
    assert footprint.container_memory("none", tmp_path) is None


def test_per_connection_is_the_growth_divided_by_connections(tmp_path):
    before = {"host": footprint.host_facts(fake_proc(tmp_path / "a")),
              "containers": {"server": {"total": 100, "kernel": 50, "user": 40}}}
    held = {"host": footprint.host_facts(fake_proc(tmp_path / "b", count=2100, slab_kb=1900,
                                                   alloc=2050)),
            "containers": {"server": {"total": 9100, "kernel": 9050, "user": 1040}}}
    out = footprint.per_connection(before, held, 1000)
    assert out["kernel_bytes_per_connection"] == 9 and out["user_bytes_per_connection"] == 1
    assert out["host_slab_bytes_per_connection"] == round(900 * 1024 / 1000)
    assert out["host_conntrack_per_connection"] == 2.0
    assert out["host_sockets_per_connection"] == 2.0
    assert out["host_tcp_mem_pages_per_connection"] == 0.0


def test_conntrack_entries_counts_only_the_runs_original_direction(tmp_path):
    line = ("ipv4     2 tcp      6 431999 ESTABLISHED src=172.18.0.3 dst={dst} sport={sp} "
            "dport={dp} src={dst} dst=172.18.0.3 sport={dp} dport={sp} [ASSURED] mark=0 "
            "zone=0 use=2\n")
    text = (line.format(dst="172.18.0.2", sp=40000, dp=5000) * 3
            + line.format(dst="172.18.0.2", sp=5000, dp=40001)   # other direction
            + line.format(dst="172.18.0.20", sp=40000, dp=5000)  # another server
            + line.format(dst="172.18.0.2", sp=40000, dp=50000))  # another port
    write(tmp_path / "net/nf_conntrack", text)
    assert footprint.conntrack_entries("172.18.0.2", 5000, tmp_path) == 3
    assert footprint.conntrack_entries("172.18.0.2", 5000, tmp_path / "missing") is None


def test_conntrack_entries_reads_the_table_without_holding_it(tmp_path):
    """A million-connection table is ~300 MB of text: it is streamed, not read whole."""
    import tracemalloc

    line = ("ipv4     2 tcp      6 431999 ESTABLISHED src=172.18.0.3 dst=172.18.0.2 "
            "sport=40000 dport=5000 src=172.18.0.2 dst=172.18.0.3 sport=5000 dport=40000 "
            "[ASSURED] mark=0 zone=0 use=2\n")
    write(tmp_path / "net/nf_conntrack", line * 50_000)  # 8 MB
    tracemalloc.start()
    try:
        assert footprint.conntrack_entries("172.18.0.2", 5000, tmp_path) == 50_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_loopback_refuses_extra_addresses_which_need_a_bridge():
    for name in ("server_addrs", "client_addrs"):
        with pytest.raises(ParamError, match=name):
            RunParams(network="loopback", **{name: 2})
    # server ports are the same on loopback: each is one more pool per destination
    one, two = (model.client_terms(RunParams(network="loopback", nofile=1000, server_ports=n,
                                             port_range="20000-20999"))[1]["ports"]
                for n in (1, 2))
    assert two == 2 * one


def test_sysctl_names_give_their_proc_files():
    assert hostlimits.proc_sys(hostlimits.FILE_MAX) == "fs/file-max"
    assert (hostlimits.proc_sys(hostlimits.BRIDGE_NF)
            == "net/bridge/bridge-nf-call-iptables")
    assert hostlimits.HOST_SYSCTLS[:3] == ("fs.file-max", "fs.nr_open",
                                           "net.netfilter.nf_conntrack_max")
