"""Topology gateway (issue 16): the clients behind a NAT router, on the Docker engine.

    clients --> router (MASQUERADE / SNAT) --> server, all on the run's internal network

Two internal networks with the router between them cannot work on an engine whose bridged
traffic passes the host's netfilter (net.bridge.bridge-nf-call-iptables=1, as here): Docker
isolates each internal network with "-i br-X ! -d <its subnet> -j DROP" and "-o br-X ! -s <its
subnet> -j DROP" in the host's FORWARD chain, so a client's SYN to the other subnet never
reaches the router (measured: router conntrack "new" stayed 0, every client ETIMEDOUT).
So the router sits on the clients' and server's one network, a router on a stick: each client
routes the server's addresses (/32) via the router, the router forwards and translates
(MASQUERADE, or SNAT to ``nat_addrs`` addresses of the subnet that it adds itself) and sends
no ICMP redirects, so the server sees only the NAT's addresses. The NAT's behaviour (its
pool per NAT address and destination, the hash that picks the address, the dropped SYN) is
the same as on a two-network gateway.

The router (agents/natrouter.py in the tcplimits-router image) is the only long-lived
container with more than the agents' privileges: root with NET_ADMIN alone,
no-new-privileges, a read-only root (a small tmpfs on /run), ``net.ipv4.ip_forward`` through
its own sysctls, pids and memory limits; run.json records it under "nat". The clients' routes
come from the NET_ADMIN helper of tcplimits.engine.addresses (``netaddr.py route``). Nothing
is published; the network stays internal.

``Gateway`` holds the steps; with ``nat none`` every step does nothing, so the engine calls
them unconditionally. Records: the router's conntrack count and /proc/net/stat/nf_conntrack
counters before connecting, with the connections held and after the clients reset theirs;
the server's view of its peers (address -> connections, lowest and highest port), read from
/proc/<server pid>/net/tcp on a local engine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tcplimits import ROLE_LABEL
from tcplimits.engine import addresses
from tcplimits.engine.faults import RunFailed
from tcplimits.engine.plan import AGENTS, SERVER_PORT, hardening
from tcplimits.model import nat as nat_model, natrun

ROUTER_CAPABILITY = "NET_ADMIN"
ROUTER_USER = "0:0"  # capabilities only take effect for root without ambient capabilities
ROUTER_READY_S = 60
COUNTERS_WAIT_S = 10
CLIENT_STOP_S = 30
# Kernel memory of a conntrack entry with its NAT extension, generously (the router's memory
# limit: its entries are charged to its cgroup).
ROUTER_BYTES_PER_ENTRY = 1024
TCP_ESTABLISHED = "01"


def router_spec(experiment, image: str, subnet: str, nat_addrs: list[str],
                servers: list[str]) -> dict[str, Any]:
    """The router container on the run's network."""
    params = experiment.params
    spec = hardening()
    spec.update(user=ROUTER_USER, cap_add=[ROUTER_CAPABILITY])
    lo, hi = nat_model.port_range(params)
    command = ["python3", f"{AGENTS}/natrouter.py", "--server-subnet", subnet,
               "--dest", ",".join(servers),
               "--nat-addrs", ",".join(nat_addrs), "--random", params.nat_random]
    if params.nat_port_range is not None:
        command += ["--to-ports", f"{lo}-{hi}"]
    demand = params.clients * params.procs * params.nofile
    return dict(
        spec, image=image, name=f"{experiment.network_name}-router", hostname="router",
        command=command, network=experiment.network_name, detach=True,
        sysctls={"net.ipv4.ip_forward": "1"}, tmpfs={"/run": "size=1m"},
        pids_limit=16, mem_limit=(memory := 64 * 2**20 + ROUTER_BYTES_PER_ENTRY * demand),
        memswap_limit=memory,  # no swap beyond the limit, as every container
        labels={**experiment.labels, ROLE_LABEL: "router"})


class Gateway:
    """The NAT steps of one run, in the order the engine calls them (each a no-op with
    nat none): setup -> add_routes -> snapshot("before") -> snapshot("held") + read_peers
    -> finish."""

    def __init__(self, experiment, log=lambda message: None):
        self.experiment, self.log = experiment, log
        self.on = experiment.params.gateway
        self.router = None
        self.router_address: str | None = None
        self.nat_addrs: list[str] = []
        self.ready: dict[str, Any] = {}
        self.counters: dict[str, Any] = {}
        self.peers: list[dict] | None = None
        self.routes: list[dict] = []
        self.client_addrs: dict[int, str] = {}  # client number -> address, while running
        self.client_sources: dict[int, list[str]] = {}  # -> its address and extra sources
        self.image: str | None = None
        self.spec: dict[str, Any] | None = None

    def setup(self) -> None:
        """Once the server has its addresses: the router, its rule installed."""
        if not self.on:
            return
        from tcplimits.image.router import ensure_router_image

        ex = self.experiment
        self.image = ensure_router_image(ex.client, log=self.log).tags[0]
        subnet = ex.network_ipam[0]["subnet"]
        plan = ex.address_plan
        self.nat_addrs = list(plan.extra.get("router", [])) if plan else []
        self.spec = router_spec(ex, self.image, subnet, self.nat_addrs, self.servers())
        self.router = ex.client.containers.create(**self.spec)
        ex.containers["router"] = self.router  # stopped and removed with the run
        self.router.start()
        self.ready = self._wait_event("router_ready", ROUTER_READY_S)
        self.router_address = ex.address("router")
        if not self.nat_addrs:
            self.nat_addrs = [self.router_address]
        self.counters["setup"] = self.ready.get("counters")

    def servers(self) -> list[str]:
        ex = self.experiment
        return ex.addresses.get("server") or [ex.server_address]

    def add_routes(self) -> None:
        """Each client's routes to the server's addresses via the router (a NET_ADMIN helper
        in its namespace), before the start signal."""
        if not self.on:
            return
        ex = self.experiment
        self.client_addrs = {int(role[len("client"):]): ex.address(role)
                             for role in ex.client_roles}
        # every source address goes through the router: the routes name destinations only
        self.client_sources = {c: ex.addresses.get(f"client{c}") or [a]
                               for c, a in self.client_addrs.items()}
        for role in ex.client_roles:
            container = ex.containers[role]
            done = addresses.add_routes(ex.client, ex.image, container,
                                        [f"{a}/32" for a in self.servers()],
                                        self.router_address, ex.labels,
                                        name=f"{container.name}-route")
            self.routes.append(done)
            ex.helpers.append(done)

    def snapshot(self, moment: str) -> None:
        """The router's conntrack counters now, under ``moment``."""
        if not self.on or self.router is None:
            return
        seq = len(self._events("router_counters")) + 1
        self.router.kill(signal="SIGUSR1")
        event = self._wait_event("router_counters", COUNTERS_WAIT_S, seq=seq)
        self.counters[moment] = event.get("counters")

    def held(self) -> None:
        """With the connections held (or the churn run's duration over): the router's
        counters and the server's peers."""
        self.snapshot("held")
        if not self.experiment.params.churn:
            self.read_peers()

    def read_peers(self) -> None:
        """The server's established connections by peer address (local engine only)."""
        if not self.on or not self.experiment.local_host:
            return
        server = self.experiment.containers["server"]
        server.reload()
        pid = server.attrs["State"].get("Pid")
        if pid:
            self.peers = server_peers(Path(f"/proc/{pid}/net"))

    def finish(self) -> None:
        """After the server's count: stop the clients (each resets its connections), then the
        router's counters once more."""
        if not self.on:
            return
        ex = self.experiment
        for role in ex.client_roles:
            try:
                ex.containers[role].kill(signal="SIGTERM")
            except Exception:  # already stopped: nothing to reset
                pass
        end = time.monotonic() + ex.close_wait(CLIENT_STOP_S)
        for role in ex.client_roles:
            try:
                ex.containers[role].wait(timeout=max(0.1, end - time.monotonic()))
            except Exception:
                pass
        self.snapshot("after")

    def compose_router(self) -> dict[str, Any] | None:
        """The router as the run's compose file reproduces it (engine.compose), once it ran."""
        if not self.on or self.spec is None or self.router_address is None:
            return None
        return {"spec": self.spec, "address": self.router_address}

    def record(self) -> dict[str, Any] | None:
        """run.json's "nat": the router, its rule and addresses, its counters, the routes, the
        server's peers."""
        if not self.on:
            return None
        spec = self.spec or {}
        return {
            "router": {"name": spec.get("name"), "image": self.image, "user": spec.get("user"),
                       "cap_add": spec.get("cap_add"), "cap_drop": spec.get("cap_drop"),
                       "sysctls": spec.get("sysctls"), "pids_limit": spec.get("pids_limit"),
                       "mem_limit": spec.get("mem_limit"), "read_only": spec.get("read_only"),
                       "address": self.router_address,
                       "iface": self.ready.get("iface"), "rule": self.ready.get("rule"),
                       "ip_forward": self.ready.get("ip_forward"),
                       "time_wait_timeout_s": _int(self.ready.get("time_wait_timeout"))},
            "nat_addrs": self.nat_addrs,
            "counters": self.counters,
            "routes": self.routes,
            "peers": self.peers,
        }

    # -- internals

    def _events(self, kind: str) -> list[dict]:
        try:
            text = self.router.logs(stdout=True, stderr=False).decode(errors="replace")
        except Exception:
            return []
        out = []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") in (kind, "router_error"):
                    out.append(event)
        return out

    def _wait_event(self, kind: str, limit: float, seq: int | None = None) -> dict:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            for event in self._events(kind):
                if event["event"] == "router_error":
                    raise RunFailed(f"the NAT router failed: {event.get('message')}")
                if seq is None or event.get("seq") == seq:
                    return event
            time.sleep(0.2)
        raise RunFailed(f"time limit: the NAT router did not report {kind} within {limit:g} s")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _addr(hex_addr: str) -> tuple[str, int]:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)[::-1]
    return ".".join(str(b) for b in raw), int(port, 16)


def server_peers(net_dir: Path, first_port: int = SERVER_PORT) -> list[dict]:
    """Established connections to the server's ports, by peer address: connections, lowest
    and highest peer port, and the server ports they came to."""
    peers: dict[str, dict] = {}
    try:
        lines = (net_dir / "tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        cols = line.split()
        if len(cols) < 4 or cols[3] != TCP_ESTABLISHED:
            continue
        _local, local_port = _addr(cols[1])
        if local_port < first_port:
            continue
        addr, port = _addr(cols[2])
        p = peers.setdefault(addr, {"addr": addr, "connections": 0, "port_lo": port,
                                    "port_hi": port, "server_ports": set()})
        p["connections"] += 1
        p["port_lo"], p["port_hi"] = min(p["port_lo"], port), max(p["port_hi"], port)
        p["server_ports"].add(local_port)
    return [{**p, "server_ports": sorted(p["server_ports"])} for _, p in sorted(peers.items())]


def run_record(gateway: Gateway, held: dict[str, list[dict]], client_addrs: dict[int, str],
               clients: list[dict], direct, churn: dict | None = None) -> dict[str, Any] | None:
    """run.json's "nat": what the engine recorded (Gateway.record) and the NAT model's
    prediction and verdict for the run (tcplimits.model.natrun.run_record)."""
    record = gateway.record()
    if record is None:
        return None
    ex = gateway.experiment
    servers = ex.addresses.get("server") or ([ex.server_address] if ex.server_address else [])
    if len(client_addrs) < ex.params.clients or not servers or not gateway.nat_addrs:
        record["prediction"] = record["verdict"] = None  # it never got that far
        return record
    from tcplimits.engine.plan import server_ports

    own = [[s for s in held.get(str(c), [])] for c in range(1, ex.params.clients + 1)]
    direct_churn = (churn or {}).get("verdict")
    loop_rate = None
    if ex.params.churn and ex.params.rate_per_s is None and direct_churn:
        # rate max: one process's unpaced speed, as the direct churn verdict measured it
        asked = (direct_churn.get("prediction") or {}).get("asked_rate")
        loop_rate = asked / ex.params.procs if asked else None
    record.update(natrun.run_record(
        ex.params, own, direct.errno,
        [gateway.client_sources.get(c) or [client_addrs[c]] for c in sorted(client_addrs)],
        servers,
        gateway.nat_addrs, [int(p) for p in server_ports(ex.params).split(",")], clients,
        record.get("counters") or {}, loop_rate=loop_rate))
    return record


def assemble(record: dict[str, Any], gateway: Gateway, held: dict[str, list[dict]],
             client_addrs: dict[int, str], clients: list[dict], direct) -> None:
    """run.json's "nat" (run_record); where the NAT model could judge the run, its count,
    limit and errno replace the direct prediction's (kept under prediction.direct); a churn
    point's churn verdict becomes the NAT's (the direct one kept under verdict.direct)."""
    record["nat"] = run_record(gateway, held, client_addrs, clients, direct, record.get("churn"))
    nat_verdict = (record["nat"] or {}).get("verdict") or {}
    churn = record.get("churn")
    if churn and churn.get("verdict") and "agrees" in nat_verdict:
        # the churn verdict of a point through the NAT is the NAT's (the direct one kept)
        direct_verdict = churn["verdict"]
        churn["verdict"] = {**direct_verdict, "agrees": nat_verdict["agrees"],
                            "sentence": nat_verdict["sentence"],
                            "direct": {k: direct_verdict.get(k) for k in ("agrees", "sentence")}}
        churn["nat"] = record["nat"].get("churn_prediction")
    nat_prediction = (record["nat"] or {}).get("prediction")
    if nat_prediction:
        record["prediction"] = {**natrun.as_prediction(nat_prediction, record["prediction"]),
                                "nat": nat_prediction}
