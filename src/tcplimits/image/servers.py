"""The real-server image (issue 21): Debian's nginx, nginx's stream module, Redis and HAProxy,
installed with apt inside a build FROM the same base as the agent image, plus the agents.

The tag `tcplimits-servers:<12 hex>` hashes the agents, servers.Dockerfile, the package list
and the base image id, as the agent image's does: an unchanged tree reuses its image. The
packages come from the mirror the base's apt sources name (the host's, see
tcplimits.image.base): no registry. Their versions are whatever that mirror serves when the
image is built; each run records the versions it ran (run.json, server.package_version).
"""

from __future__ import annotations

from pathlib import Path

import docker

from tcplimits.image.base import Log, ensure_base, local_image
from tcplimits.image.build import _build_lock, agent_files, build_image, content_tag

SERVERS_REPO = "tcplimits-servers"
DOCKERFILE = Path(__file__).resolve().parent / "servers.Dockerfile"
PACKAGES = ("nginx", "libnginx-mod-stream", "redis-server", "haproxy")


def server_image_tag(base_id: str) -> str:
    """`tcplimits-servers:<12 hex>` for the current agents, Dockerfile, packages and base."""
    return content_tag(SERVERS_REPO, DOCKERFILE.read_bytes(), " ".join(PACKAGES).encode(),
                       base_id.encode())


def ensure_server_image(client: docker.DockerClient, *, rebuild: bool = False,
                        log: Log = print) -> docker.models.images.Image:
    """The real-server image, building it (and the base) only when missing."""
    with _build_lock(log):
        base = ensure_base(client, log=log)
        tag = server_image_tag(client.images.get(base).id)
        old = local_image(client, tag)
        if old is not None and not rebuild:
            return old
        log(f"building {tag} from {base} (apt-get install {' '.join(PACKAGES)})")
        return build_image(client, agent_files(), tag, old, rebuild=rebuild, log=log,
                           buildargs={"BASE_IMAGE": base, "PACKAGES": " ".join(PACKAGES)},
                           dockerfile=DOCKERFILE)
