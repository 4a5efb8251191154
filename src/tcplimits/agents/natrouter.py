"""The NAT router of topology gateway (issue 16): forwards the clients' connections to the
server and translates their source addresses, as a NAT gateway does.

It shares the run's network with them (a router on a stick: the clients route the server's
addresses via it; two internal networks cannot be routed between on an engine whose bridged
traffic passes the host's netfilter, see tcplimits.engine.nat). So that the clients keep
going through it, it sends no ICMP redirects (a filter rule drops them).

Runs in the router container (tcplimits-router image: python3 and iptables), as root with
NET_ADMIN as its only capability; ip_forward comes from the container's own sysctls. It
adds the NAT addresses to its interface on the server's subnet (``--nat-addrs``), installs
one POSTROUTING rule: MASQUERADE (one address: the interface's) or SNAT to the address range,
with ``--to-ports`` and ``--random`` / ``--random-fully`` when asked. Then it prints
{"event": "router_ready", ...} with the rule and this namespace's conntrack counters, and on
SIGUSR1 prints them again ({"event": "router_counters", "moment": ...}); SIGTERM ends it
after a last print. Once its rules are in, it creates READY_FILE: ``natrouter.py --check``
(a compose file's health check) exits 0 once it exists. Standard library only (iptables runs
as a program).
"""

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netaddr  # noqa: E402  (the agents' own rtnetlink helper)

IPTABLES = "/usr/sbin/iptables-nft"
STAT = "/proc/net/stat/nf_conntrack"
READY_FILE = "/run/tcplimits-router.ready"  # on the router's tmpfs /run


def _emit(event, **fields):
    fields["event"] = event
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server-subnet", required=True, help="the run's network, CIDR")
    p.add_argument("--dest", required=True, help="comma-separated server addresses")
    p.add_argument("--nat-addrs", default="", help="comma-separated SNAT addresses "
                   "(contiguous); empty: MASQUERADE to the interface's own address")
    p.add_argument("--to-ports", default="", help="LO-HI; empty: the kernel's default")
    p.add_argument("--random", choices=["none", "random", "fully"], default="none")
    return p.parse_args(argv)


def counters():
    """This namespace's conntrack: the entry count and /proc/net/stat/nf_conntrack summed over
    CPUs (hex columns; "entries" is global, the rest per CPU)."""
    out = {}
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            out["count"] = int(f.read())
    except (OSError, ValueError):
        out["count"] = None
    try:
        with open(STAT) as f:
            names = f.readline().split()
            sums = dict.fromkeys(names, 0)
            for line in f:
                for name, value in zip(names, line.split()):
                    sums[name] += int(value, 16)
        sums.pop("entries", None)
        out["stat"] = sums
    except (OSError, ValueError):
        out["stat"] = None
    return out


def sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def rule(args, iface):
    """The POSTROUTING rule's arguments after -A POSTROUTING."""
    spec = ["-d", args.dest, "-o", iface, "-p", "tcp"]
    addrs = [a for a in args.nat_addrs.split(",") if a]
    if addrs:
        target = f"{addrs[0]}-{addrs[-1]}" + (f":{args.to_ports}" if args.to_ports else "")
        spec += ["-j", "SNAT", "--to-source", target]
    else:
        spec += ["-j", "MASQUERADE"] + (["--to-ports", args.to_ports] if args.to_ports else [])
    spec += {"none": [], "random": ["--random"], "fully": ["--random-fully"]}[args.random]
    return spec


def main(argv=None):
    if (sys.argv[1:] if argv is None else argv) == ["--check"]:
        return 0 if os.path.exists(READY_FILE) else 1
    args = parse_args(argv)
    subnet = ipaddress.ip_network(args.server_subnet, strict=False)
    found = [a for a in netaddr.addresses() if a["addr"]
             and ipaddress.ip_address(a["addr"]) in subnet]
    if not found:
        _emit("router_error", message=f"no interface on {subnet}")
        return 1
    iface = found[0]["iface"]
    for addr in [a for a in args.nat_addrs.split(",") if a]:
        netaddr.add_address(iface, addr, subnet.prefixlen)
    spec = rule(args, iface)
    for command in (["-t", "nat", "-A", "POSTROUTING", *spec],
                    ["-A", "OUTPUT", "-p", "icmp", "--icmp-type", "redirect", "-j", "DROP"]):
        done = subprocess.run([IPTABLES, *command], capture_output=True, text=True)
        if done.returncode != 0:
            _emit("router_error", message=(done.stderr or done.stdout).strip()[-300:])
            return 1
    listed = subprocess.run([IPTABLES, "-t", "nat", "-S", "POSTROUTING"], capture_output=True,
                            text=True).stdout.strip().splitlines()
    state = {"moment": None}

    def on_signal(signum, _frame):
        state["moment"] = "term" if signum == signal.SIGTERM else "usr1"

    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with open(READY_FILE, "w"):
        pass
    _emit("router_ready", iface=iface, rule=listed, addresses=netaddr.addresses(),
          ip_forward=sysctl("net.ipv4.ip_forward"),
          time_wait_timeout=sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait"),
          conntrack_max=sysctl("net.netfilter.nf_conntrack_max"), counters=counters())
    seq = 0
    while True:
        signal.pause()
        moment, state["moment"] = state["moment"], None
        if moment is None:
            continue
        seq += 1
        _emit("router_counters", seq=seq, at=time.time(), counters=counters())
        if moment == "term":
            return 0


if __name__ == "__main__":
    sys.exit(main())
