"""The agent image, built offline: a Debian base by debootstrap (no registry), then python3
and the agent programs on top.

    build         ensure_image: the tag is a hash of the agents, the Dockerfile and the base
    base          ensure_base: debootstrap into a folder, `docker import` it
    apt_sources   which Debian mirror and release the host's apt sources name
    Dockerfile    the agent image's recipe
    router        ensure_router_image: the NAT router's image, the agent image plus Debian's
                  iptables fetched with apt-get download (Dockerfile.router)
    extra         which of the router's and the real servers' images points need, built by
                  `tcplimits image --router / --servers / --all`
"""

from tcplimits.image.base import ImageError, ensure_base
from tcplimits.image.build import (AGENT_REPO, AGENTS_DIR, DOCKERFILE, agent_files, ensure_image,
                                   image_tag)

__all__ = ["AGENTS_DIR", "AGENT_REPO", "DOCKERFILE", "ImageError", "agent_files", "ensure_base",
           "ensure_image", "image_tag"]
