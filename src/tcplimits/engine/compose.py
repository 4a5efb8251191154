"""The run's compose.yml: the same containers, to reproduce a run by hand (pure).

The file is valid for Compose v1 (Debian's docker-compose 1.29) and v2 (``docker compose``):
no top-level ``name:`` (v1 refuses it); the project name is given with ``-p`` instead.
"""

from __future__ import annotations

import re

from typing import Any

from .. import LABEL, RUN_LABEL
from .plan import AGENTS, HARDENING, INSTANCE_LABEL, OWNER_LABEL, SERVER_PORT


def compose_project(run_id: str) -> str:
    """The ``-p`` project name for a run: lower case letters, digits, '-' and '_' (what both
    Compose versions accept)."""
    return "tcplimits-" + re.sub(r"[^a-z0-9_-]", "-", run_id.lower())


def compose_file(specs: dict[str, dict[str, Any]], run_id: str) -> str:
    """A docker-compose file that reproduces the run by hand, as the seed did. Clients start
    when the server's health check sees it listening, instead of on the engine's signal."""
    import yaml

    services = {}
    for role, spec in specs.items():
        command = [c for c in spec["command"] if c != "--wait-signal"]
        service = {
            "image": spec["image"],
            "command": command,
            **{key: spec[key] for key in HARDENING},
            "ulimits": {u["Name"]: {"soft": u["Soft"], "hard": u["Hard"]}
                        for u in spec["ulimits"]},
            "pids_limit": spec["pids_limit"],
            "mem_limit": spec["mem_limit"],
            "labels": {k: v for k, v in spec["labels"].items()
                       if k not in (OWNER_LABEL, INSTANCE_LABEL)},
        }
        if "hostname" in spec:
            service["hostname"] = spec["hostname"]
        if spec.get("network_mode") == "none":
            service["network_mode"] = "none"
        elif spec.get("network_mode", "").startswith("container:"):
            service["network_mode"] = "service:server"  # the server's namespace, by service
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
        services[role] = service
    doc: dict[str, Any] = {"services": services}
    if any("networks" in s for s in services.values()):
        doc["networks"] = {"testnet": {"internal": True,
                                       "labels": {LABEL: "1", RUN_LABEL: run_id}}}
    project = compose_project(run_id)
    header = (f"# Reproduces tcplimits run {run_id} by hand:\n"
              "#   tcplimits image            # builds the image named below if missing\n"
              f"#   docker compose -p {project} -f compose.yml up -d\n"
              f"#   docker compose -p {project} logs client1   # repeat per client\n"
              f"#   docker compose -p {project} down -v\n"
              "# (Compose v1: docker-compose instead of docker compose.) Each client prints\n"
              "# JSON lines; its 'result' line says how many connections it held and the errno\n"
              "# that stopped it; its 'ready' line lists the ports of the range already held.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)
