"""The NAT router's image (issue 16): the agent image plus iptables.

The Debian packages come from the host's apt sources (``apt-get download``, the mirror the base
image is debootstrapped from), so the router needs no registry either. The tag
``tcplimits-router:<12 hex>`` is a hash of the agent image id, Dockerfile.router and the
package list, so it is rebuilt when the agents change.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from tcplimits import LABEL
from tcplimits.image.base import ImageError, Log, local_image
from tcplimits.image.build import _build_lock, ensure_image

ROUTER_REPO = "tcplimits-router"
ROUTER_DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile.router"
# iptables (nf_tables backend) and what it needs beyond a debootstrap minbase.
ROUTER_PACKAGES = ("iptables", "libip4tc2", "libip6tc2", "libxtables12", "libmnl0",
                   "libnetfilter-conntrack3", "libnfnetlink0", "libnftnl11", "netbase")


def router_tag(agent_image_id: str) -> str:
    digest = hashlib.sha256()
    for part in (agent_image_id.encode(), ROUTER_DOCKERFILE.read_bytes(),
                 " ".join(ROUTER_PACKAGES).encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    return f"{ROUTER_REPO}:{digest.hexdigest()[:12]}"


def fetch_packages(folder: Path) -> list[Path]:
    """ROUTER_PACKAGES as .deb files in ``folder``, from the host's apt sources."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise ImageError("the NAT router's image needs Debian's iptables packages and this host "
                         "has no apt-get to fetch them: build it on a Debian host, or load a "
                         f"{ROUTER_REPO} image")
    done = subprocess.run([apt, "download", *ROUTER_PACKAGES], cwd=folder, capture_output=True,
                          text=True)
    debs = sorted(folder.glob("*.deb"))
    if done.returncode != 0 or len(debs) < len(ROUTER_PACKAGES):
        raise ImageError(f"apt-get download {' '.join(ROUTER_PACKAGES)} failed (exit "
                         f"{done.returncode}): {done.stderr.strip()[-300:]}")
    for deb in debs:
        deb.chmod(0o644)
    return debs


def ensure_router_image(client: docker.DockerClient, *, log: Log = print):
    """The router image, built when missing (after the agent image it starts from)."""
    agent = ensure_image(client, log=log)
    tag = router_tag(agent.id)
    with _build_lock(log):
        found = local_image(client, tag)
        if found is not None:
            return found
        log(f"building {tag} from {agent.tags[0]} with {', '.join(ROUTER_PACKAGES)}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="tcplimits-router-") as context:
            root = Path(context)
            (root / "debs").mkdir()
            fetch_packages(root / "debs")
            shutil.copyfile(ROUTER_DOCKERFILE, root / "Dockerfile")
            try:
                image, _ = client.images.build(
                    path=context, tag=tag, buildargs={"AGENT_IMAGE": agent.tags[0]},
                    labels={LABEL: "1"}, rm=True, forcerm=True, pull=False)
            except (docker.errors.BuildError, docker.errors.APIError) as err:
                raise ImageError(f"building {tag} failed: {err}") from err
        log(f"built {tag} in {time.monotonic() - started:.0f}s")
        return image
