"""Extra IPv4 addresses for the server (the book's "virtual IPs") and the clients (source
addresses), configured from outside the agents.

Docker gives a container one address per network. The agents run with cap_drop ALL, so they
cannot add addresses themselves: a short-lived helper container joins the target's network
namespace (network_mode "container:<id>") with NET_ADMIN as its only capability, runs
agents/netaddr.py (rtnetlink, standard library) and exits. Each helper and what it added is
recorded in run.json ("addresses" and "privileges").

So that Docker never hands one of those addresses to another container, a run that needs
extra addresses gets a network with an explicit subnet and an ``ip_range`` that Docker
allocates from (the subnet's first /26: 62 addresses, for at most 33 containers); the extra
addresses come from the rest of the subnet. A nat gateway run gets such a network too, extra
addresses or not: its compose file pins the subnet and every address, since the router's
rule and the clients' routes name them. Other runs with no extra address keep Docker's
default network (the default path is unchanged).
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import docker.errors
from docker.types import IPAMConfig, IPAMPool

from tcplimits import ROLE_LABEL
from tcplimits.config.params import RunParams
from tcplimits.engine.plan import HELPER_LIMITS

# Candidate subnets: 10.210.0.0/20, 10.210.16.0/20, ... (160 of them); a /20 holds the
# ip_range /26 plus 4,030 extra addresses, more than 32 clients x 63 + 63 need.
SUBNET_PREFIX = 20
IP_RANGE_PREFIX = 26
CANDIDATE_BASES = [f"10.{second}.{third}.0" for second in range(210, 220)
                   for third in range(0, 256, 16)]
HELPER_CAPABILITY = "NET_ADMIN"
# Root, but with NET_ADMIN as its only capability: a non-root user gets no effective
# capability from cap_add (the engine sets no ambient capabilities: CapEff 0 as uid 65534 on
# Docker 20.10), and no-new-privileges rules out file capabilities on python3.
HELPER_USER = "0:0"
HELPER_TIMEOUT_S = 60
NETADDR = "/opt/tcplimits/agents/netaddr.py"
IFACE = "eth0"


@dataclass(frozen=True)
class AddressPlan:
    """The network's subnet, Docker's allocation range inside it, and the extra addresses
    each role gets ("server", "client1", ...)."""

    subnet: str
    ip_range: str
    gateway: str
    extra: dict[str, list[str]]

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": self.subnet, "ip_range": self.ip_range, "gateway": self.gateway,
                "extra": self.extra}


def needs_extra(params: RunParams) -> bool:
    """The run's network gets a planned subnet (module docstring)."""
    return params.server_addrs > 1 or params.client_addrs > 1 or params.gateway


def plan(params: RunParams, base: str) -> AddressPlan:
    """Pure: the subnet at ``base`` and the extra addresses of every role, in order: the
    server's first, then client 1's, client 2's, ..."""
    subnet = ipaddress.ip_network(f"{base}/{SUBNET_PREFIX}")
    ip_range = ipaddress.ip_network(f"{base}/{IP_RANGE_PREFIX}")
    hosts = (ipaddress.ip_address(int(ip_range.broadcast_address) + 1 + i)
             for i in range(subnet.num_addresses))
    extra = {"server": [str(next(hosts)) for _ in range(params.server_addrs - 1)]}
    for client in range(1, params.clients + 1):
        extra[f"client{client}"] = [str(next(hosts)) for _ in range(params.client_addrs - 1)]
    if params.gateway and params.nat_addrs > 1:  # the NAT's SNAT range, contiguous (engine.nat)
        extra["router"] = [str(next(hosts)) for _ in range(params.nat_addrs)]
    last = ipaddress.ip_address(max((a for v in extra.values() for a in v),
                                    key=lambda a: int(ipaddress.ip_address(a)), default=base))
    if last not in subnet or last == subnet.broadcast_address:
        raise ValueError(f"{subnet} cannot hold {sum(map(len, extra.values()))} extra addresses")
    return AddressPlan(str(subnet), str(ip_range), str(next(ip_range.hosts())), extra)


def used_subnets(client) -> list[ipaddress.IPv4Network]:
    found = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                found.append(ipaddress.ip_network(config.get("Subnet", ""), strict=False))
            except ValueError:
                continue
    return found


def free_bases(used: Iterable[ipaddress.IPv4Network]) -> list[str]:
    """Candidate bases whose /20 overlaps no network the engine has."""
    used = list(used)
    return [b for b in CANDIDATE_BASES
            if not any(ipaddress.ip_network(f"{b}/{SUBNET_PREFIX}").overlaps(u) for u in used
                       if u.version == 4)]


def create_network(client, name: str, params: RunParams, labels: dict[str, str]):
    """(network, plan) on the first free candidate subnet. Another run may take a subnet
    between listing and creating: the engine refuses the overlap and the next one is tried."""
    last_error: Exception | None = None
    for base in free_bases(used_subnets(client)):
        address_plan = plan(params, base)
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=address_plan.subnet,
                                                 iprange=address_plan.ip_range,
                                                 gateway=address_plan.gateway)])
        try:
            network = client.networks.create(name, driver="bridge", internal=True,
                                             labels=labels, ipam=ipam, check_duplicate=True)
            return network, address_plan
        except docker.errors.APIError as err:
            if "overlap" not in str(err).lower():
                raise
            last_error = err
    raise RuntimeError(f"no free subnet among {len(CANDIDATE_BASES)} candidates "
                       f"(10.210.0.0/20 ... 10.219.240.0/20): {last_error}")


def helper_spec(image: str, target_id: str, addrs: list[str], prefix: int,
                labels: dict[str, str], name: str) -> dict[str, Any]:
    """The helper container: the target's network namespace, NET_ADMIN and nothing else."""
    return dict(
        image=image, name=name,
        command=["python3", NETADDR, "add", IFACE, *[f"{a}/{prefix}" for a in addrs]],
        network_mode=f"container:{target_id}", user=HELPER_USER,
        cap_drop=["ALL"], cap_add=[HELPER_CAPABILITY], security_opt=["no-new-privileges"],
        read_only=True, detach=True, labels={**labels, ROLE_LABEL: "netadmin"},
        **HELPER_LIMITS,
    )


def _run_helper(client, spec: dict[str, Any],
                track: Callable[[Any], None] = lambda c: None) -> tuple[int, str, dict, float]:
    """Run one helper container to its end and remove it: (exit status, output, its
    HostConfig, seconds)."""
    t0 = time.monotonic()
    helper = client.containers.create(**spec)
    track(helper)
    try:
        helper.start()
        status = helper.wait(timeout=HELPER_TIMEOUT_S).get("StatusCode")
        output = helper.logs(stdout=True, stderr=True).decode(errors="replace")
        helper.reload()
        host = helper.attrs.get("HostConfig") or {}
    finally:
        try:
            helper.remove(force=True)
        except docker.errors.NotFound:
            pass
    return status, output, host, round(time.monotonic() - t0, 3)


def _helper_record(target, name: str, image: str, host: dict, duration: float) -> dict:
    return {"target": target.name, "helper": name, "image": image, "user": HELPER_USER,
            "cap_add": host.get("CapAdd"), "cap_drop": host.get("CapDrop"),
            "network_mode": host.get("NetworkMode"), "duration_s": duration}


def add_addresses(client, image: str, target, addrs: list[str], prefix: int,
                  labels: dict[str, str], name: str,
                  track: Callable[[Any], None] = lambda c: None) -> dict[str, Any]:
    """Run the helper against ``target`` and return what run.json records of it. ``track``
    receives the helper container so the caller can remove it if we are interrupted."""
    spec = helper_spec(image, target.id, addrs, prefix, labels, name)
    status, output, host, duration = _run_helper(client, spec, track)
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    if status != 0:
        raise RuntimeError(f"adding {', '.join(addrs)} to {target.name} failed (exit {status}): "
                           f"{output.strip()[-400:]}")
    listed = next((e["addresses"] for e in events if e["event"] == "addresses"), [])
    return {
        **_helper_record(target, name, image, host, duration),
        "added": [e["addr"] for e in events if e["event"] == "added"],
        "addresses_after": [a["addr"] for a in listed if a["iface"] == IFACE],
    }


def route_spec(image: str, target_id: str, dests: list[str], via: str,
               labels: dict[str, str], name: str) -> dict[str, Any]:
    """The helper adding a route to each of ``dests`` via ``via`` in the target's namespace
    (topology gateway: the clients reach the server through the NAT router)."""
    spec = helper_spec(image, target_id, [], 0, labels, name)
    spec["command"] = ["python3", NETADDR, "route", "via", via, *dests]
    return spec


def add_routes(client, image: str, target, dests: list[str], via: str, labels: dict[str, str],
               name: str) -> dict[str, Any]:
    """Run route_spec's helper against ``target``; what run.json records of it."""
    spec = route_spec(image, target.id, dests, via, labels, name)
    status, output, host, duration = _run_helper(client, spec)
    if status != 0:
        raise RuntimeError(f"adding routes to {', '.join(dests)} via {via} in {target.name} "
                           f"failed (exit {status}): {output.strip()[-400:]}")
    return {**_helper_record(target, name, image, host, duration), "routes": dests, "via": via}
