"""The agent image: python3 plus the agent programs, built once per code change.

The tag `tcplimits-agent:<12 hex>` is a hash of the agent programs, the Dockerfile and the
base image id, so an unchanged tree reuses its image and a changed one gets a new image.
The base image comes from tcplimits.image.base.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import docker
import docker.errors

from tcplimits import LABEL
from tcplimits.image.base import ImageError, Log, ensure_base, local_image

__all__ = ["AGENT_REPO", "ImageError", "agent_files", "ensure_base", "ensure_image", "image_tag"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
AGENTS_DIR = PACKAGE_DIR / "agents"
DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile"

AGENT_REPO = "tcplimits-agent"


def agent_files() -> list[Path]:
    """The agent programs that go into the image, sorted."""
    return sorted(AGENTS_DIR.glob("*.py"))


def image_tag(base_id: str) -> str:
    """`tcplimits-agent:<12 hex>` for the current agents, Dockerfile and base image id."""
    return content_tag(AGENT_REPO, DOCKERFILE.read_bytes(), base_id.encode())


def content_tag(repo: str, *parts: bytes) -> str:
    """`<repo>:<12 hex>`: a hash of the agents (names and bytes) and ``parts`` in order."""
    digest = hashlib.sha256()
    for path in agent_files():
        # Names count too: renaming an agent changes what the containers run.
        _hash_part(digest, path.name.encode())
        _hash_part(digest, path.read_bytes())
    for part in parts:
        _hash_part(digest, part)
    return f"{repo}:{digest.hexdigest()[:12]}"


def _hash_part(digest: "hashlib._Hash", data: bytes) -> None:
    # Length-prefixed so that moving bytes between two parts changes the hash.
    digest.update(len(data).to_bytes(8, "big"))
    digest.update(data)


def ensure_image(client: docker.DockerClient, *, rebuild: bool = False,
                 log: Log = print) -> docker.models.images.Image:
    """The agent image, building the base and the image only when missing.

    rebuild=True builds the agent image again without the build cache (the base is kept).
    """
    files = agent_files()
    if not files:
        raise ImageError(f"no agent programs (*.py) in {AGENTS_DIR}: reinstall tcplimits")
    with _build_lock(log):
        return _ensure_image_locked(client, files, rebuild, log)


def _ensure_image_locked(client: docker.DockerClient, files: list[Path], rebuild: bool,
                         log: Log) -> docker.models.images.Image:
    base = ensure_base(client, log=log)
    base_id = client.images.get(base).id
    tag = image_tag(base_id)
    old = local_image(client, tag)
    if old is not None and not rebuild:
        return old

    log(f"building {tag} from {base}")
    return build_image(client, files, tag, old, buildargs={"BASE_IMAGE": base},
                       rebuild=rebuild, log=log)


def build_image(client: docker.DockerClient, files: list[Path], tag: str, old, *,
                buildargs: dict[str, str], rebuild: bool, log: Log,
                dockerfile: Path | None = None) -> docker.models.images.Image:
    """Build ``tag`` from ``dockerfile`` with the agents as context, labelled; the image it
    replaces (``old``) is removed unless a container still uses it."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tcplimits-build-") as context:
        _write_context(Path(context), files, dockerfile)
        try:
            image, _ = client.images.build(
                path=context, tag=tag, buildargs=buildargs,
                labels={LABEL: "1"}, rm=True, forcerm=True, pull=False, nocache=rebuild)
        except docker.errors.BuildError as err:
            raise ImageError(f"building {tag} failed: {err.msg}\n"
                             f"{_build_log_tail(err.build_log)}") from err
        except docker.errors.APIError as err:
            raise ImageError(f"building {tag} failed: {err.explanation or err}") from err
    log(f"built {tag} in {time.monotonic() - started:.0f}s")
    if old is not None and old.id != image.id:
        _remove_quietly(client, old.id)
    return image


@contextmanager
def _build_lock(log: Log) -> Iterator[None]:
    """Serialise builds across processes: parallel runs must not build the same image twice."""
    path = Path(tempfile.gettempdir()) / "tcplimits-image.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        # Someone else's lock file we may not open: building unlocked beats failing.
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another tcplimits process building the image ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_context(context: Path, files: Iterable[Path], dockerfile: Path | None = None) -> None:
    """A minimal build context: the Dockerfile (the agent image's unless given) and the
    agents, readable by any user."""
    shutil.copyfile(dockerfile or DOCKERFILE, context / "Dockerfile")
    agents = context / "agents"
    agents.mkdir()
    for path in files:
        target = agents / path.name
        shutil.copyfile(path, target)
        # The containers run as 65534; a restrictive umask must not make agents unreadable.
        target.chmod(0o644)
    agents.chmod(0o755)


def _build_log_tail(build_log: Iterable[dict], lines: int = 25) -> str:
    text = "".join(str(chunk.get("stream") or chunk.get("error") or "")
                   for chunk in build_log if isinstance(chunk, dict))
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _remove_quietly(client: docker.DockerClient, image_id: str) -> None:
    # The image a rebuild replaced is left untagged; drop it unless a container still uses it.
    try:
        client.images.remove(image_id)
    except docker.errors.APIError:
        pass
