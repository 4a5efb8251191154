"""The run's compose.yml: the same containers, to reproduce a run by hand (pure).

The file is valid for Compose v1 (Debian's docker-compose 1.29) and v2 (``docker compose``):
no top-level ``name:`` (v1 refuses it); the project name is given with ``-p`` instead.

A run with extra addresses (server_addrs, client_addrs) gets the run's subnet and each
container's address pinned, and, per container with extra addresses, a one-shot helper
service that adds them as the engine's helper did (NET_ADMIN only, in that container's
namespace). Clients start once the server's helper has finished, and wait (--wait-sources)
until their own helper has added their source addresses.

A nat gateway run (``router``: the engine's router spec and address) also gets the router
service as the engine ran it (its image, command and rule, root with NET_ADMIN alone, its
ip_forward sysctl, read-only with a tmpfs /run; healthy once its rule is in) and, per client,
a one-shot ``<client>-route`` helper that routes the server's addresses via the router (as
the engine's helper did). Clients start once the router is healthy and wait (--wait-route)
for their route.
"""

from __future__ import annotations

import re

from typing import Any

from tcplimits import INSTANCE_LABEL, LABEL, OWNER_LABEL, RUN_LABEL, USER_LABEL
from tcplimits.engine import addresses as addrs
from tcplimits.model import fourtuple
from tcplimits.engine.plan import AGENTS, HARDENING, HELPER_LIMITS, SERVER_PORT

# How long a client of a compose file waits for its helper to add its source addresses.
WAIT_SOURCES_S = 60


def compose_project(run_id: str) -> str:
    """The ``-p`` project name for a run: lower case letters, digits, '-' and '_' (what both
    Compose versions accept)."""
    return "tcplimits-" + re.sub(r"[^a-z0-9_-]", "-", run_id.lower())


def compose_file(specs: dict[str, dict[str, Any]], run_id: str, *,
                 address_plan: addrs.AddressPlan | None = None,
                 addresses: dict[str, list[str]] | None = None,
                 bind_mode: str = fourtuple.CONNECT,
                 router: dict[str, Any] | None = None) -> str:
    """A docker-compose file that reproduces the run by hand, as the seed did. Clients start
    when the server's health check sees it listening, instead of on the engine's signal.
    ``address_plan`` and ``addresses`` (role -> [its address, *extra]): a run with extra
    addresses, reproduced with them; ``router`` ({"spec", "address"}): a nat gateway run's
    router (module docstring)."""
    import yaml

    # a run that failed before every container had its addresses gets the plain file
    pinned = address_plan is not None and all(role in (addresses or {}) for role in specs)
    nat = pinned and router is not None and bool(router.get("spec")) and bool(router.get("address"))
    services = {}
    for role, spec in specs.items():
        # no engine to signal the start or the held check: start at once, check at once
        command = [c for c in spec["command"] if c not in ("--wait-signal", "--check-signal")]
        extra = address_plan.extra.get(role, []) if pinned else []
        if pinned and role != "server":
            command = _client_command(command, addresses["server"], extra, bind_mode)
            if nat:
                command += ["--wait-route", router["address"], "--wait-route-s",
                            f"{WAIT_SOURCES_S}"]
        service = {
            "image": spec["image"],
            "command": command,
            **{key: spec[key] for key in HARDENING},
            "ulimits": {u["Name"]: {"soft": u["Soft"], "hard": u["Hard"]}
                        for u in spec["ulimits"]},
            "pids_limit": spec["pids_limit"],
            "mem_limit": spec["mem_limit"],
            "memswap_limit": spec["memswap_limit"],
            **({"cpu_shares": spec["cpu_shares"]} if "cpu_shares" in spec else {}),
            "labels": {k: v for k, v in spec["labels"].items()
                       if k not in (OWNER_LABEL, INSTANCE_LABEL, USER_LABEL)},
        }
        if "hostname" in spec:
            service["hostname"] = spec["hostname"]
        if spec.get("network_mode") == "none":
            service["network_mode"] = "none"
        elif spec.get("network_mode", "").startswith("container:"):
            service["network_mode"] = "service:server"  # the server's namespace, by service
        elif pinned:
            service["networks"] = {"testnet": {"ipv4_address": addresses[role][0]}}
        else:
            service["networks"] = ["testnet"]
        if "sysctls" in spec:
            service["sysctls"] = spec["sysctls"]
        if role == "server":
            service["healthcheck"] = {
                "test": ["CMD", "python3", f"{AGENTS}/server.py", "--check",
                         "--port", str(SERVER_PORT)],
                "interval": "1s", "retries": 30,
            }
        else:
            service["depends_on"] = {"server": {"condition": "service_healthy"}}
            if pinned and address_plan.extra.get("server"):
                service["depends_on"]["server-addrs"] = {
                    "condition": "service_completed_successfully"}
            if nat:
                service["depends_on"]["router"] = {"condition": "service_healthy"}
        services[role] = service
        if extra:
            services[f"{role}-addrs"] = _helper_service(spec, role, extra, address_plan.prefix)
        if nat and role != "server":
            services[f"{role}-route"] = _route_service(spec, role, addresses["server"],
                                                       router["address"])
    if nat:
        services["router"] = _router_service(router["spec"], router["address"])
    doc: dict[str, Any] = {"services": services}
    if any("networks" in s for s in services.values()):
        doc["networks"] = {"testnet": {"internal": True,
                                       "labels": {LABEL: "1", RUN_LABEL: run_id}}}
        if pinned:
            doc["networks"]["testnet"]["ipam"] = {"config": [{
                "subnet": address_plan.subnet, "ip_range": address_plan.ip_range,
                "gateway": address_plan.gateway}]}
    project = compose_project(run_id)
    header = (f"# Reproduces tcplimits run {run_id} by hand:\n"
              "#   tcplimits image            # builds the image named below if missing\n"
              f"#   docker compose -p {project} -f compose.yml up -d\n"
              f"#   docker compose -p {project} logs client1   # repeat per client\n"
              f"#   docker compose -p {project} down -v\n"
              "# (Compose v1: docker-compose instead of docker compose.) Each client prints\n"
              "# JSON lines; its 'result' line says how many connections it held and the errno\n"
              "# that stopped it; its 'ready' line lists the ports of the range already held.\n")
    if pinned:
        header += ("# The run's extra addresses: each <role>-addrs service adds them to <role> and\n"
                   "# exits (NET_ADMIN only, as the engine's helper); the subnet is the run's, so\n"
                   "# `down` the run's own network first if it is still there.\n")
    if nat:
        header += ("# Behind the NAT: the router service needs its image (`tcplimits image --router`\n"
                   "# builds the tag named below); each <client>-route service routes the\n"
                   "# server's addresses via the router in that client's namespace and exits.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def _client_command(command: list[str], server: list[str], extra: list[str],
                    bind_mode: str) -> list[str]:
    """A client's command with the server's addresses (pinned) and, where the bind mode uses
    them, its extra source addresses, waited for (the helper adds them after it starts)."""
    command = list(command)
    command[command.index("--server") + 1] = ",".join(server)
    if extra and bind_mode != fourtuple.CONNECT:
        command += ["--sources", ",".join(extra), "--wait-sources", f"{WAIT_SOURCES_S}"]
    return command


def _labels(spec: dict[str, Any]) -> dict[str, str]:
    """A spec's labels without the ones naming this engine's user and instance."""
    return {k: v for k, v in spec["labels"].items()
            if k not in (OWNER_LABEL, INSTANCE_LABEL, USER_LABEL)}


def _helper_service(spec: dict[str, Any], role: str, extra: list[str],
                    prefix: int) -> dict[str, Any]:
    """The one-shot service that adds ``role``'s extra addresses in its namespace."""
    helper = addrs.helper_spec(spec["image"], role, extra, prefix, _labels(spec),
                               f"{role}-addrs")
    return _one_shot(helper, role)


def _route_service(spec: dict[str, Any], role: str, servers: list[str],
                   via: str) -> dict[str, Any]:
    """The one-shot service that routes the server's addresses via the router in ``role``'s
    namespace (nat gateway)."""
    helper = addrs.route_spec(spec["image"], role, [f"{a}/32" for a in servers], via,
                              _labels(spec), f"{role}-route")
    return _one_shot(helper, role)


def _router_service(spec: dict[str, Any], address: str) -> dict[str, Any]:
    """The NAT router as the engine ran it (tcplimits.engine.nat.router_spec), healthy once
    its rule is installed."""
    service = {key: spec[key] for key in ("image", "command", "hostname", *HARDENING, "cap_add",
                                          "sysctls", "pids_limit", "mem_limit", "memswap_limit")}
    service["tmpfs"] = [f"{path}:{options}" for path, options in spec["tmpfs"].items()]
    service["labels"] = _labels(spec)
    service["networks"] = {"testnet": {"ipv4_address": address}}
    service["healthcheck"] = {"test": ["CMD", "python3", f"{AGENTS}/natrouter.py", "--check"],
                              "interval": "1s", "retries": 30}
    return service


def _one_shot(helper: dict[str, Any], role: str) -> dict[str, Any]:
    """A NET_ADMIN helper as a service in ``role``'s namespace, run once it started."""
    return {
        "image": helper["image"], "command": helper["command"], "user": helper["user"],
        "cap_drop": helper["cap_drop"], "cap_add": helper["cap_add"],
        "security_opt": helper["security_opt"], "read_only": helper["read_only"],
        **{key: helper[key] for key in HELPER_LIMITS}, "labels": helper["labels"],
        "network_mode": f"service:{role}",
        "depends_on": {role: {"condition": "service_started"}},
    }
