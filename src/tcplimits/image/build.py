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
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import docker
import docker.errors

from tcplimits import LABEL
from tcplimits.image.base import ImageError, Log, ensure_base, local_base, local_image

__all__ = ["AGENT_REPO", "ImageError", "agent_files", "ensure_base", "ensure_image", "image_tag"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
AGENTS_DIR = PACKAGE_DIR / "agents"
DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile"

AGENT_REPO = "tcplimits-agent"
# A Debian base takes minutes to build once; a lock held far longer is a stuck holder, and a
# run should say so and whom rather than hang.
LOCK_TIMEOUT_S = 1800.0
LOCK_POLL_S = 0.5


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
    if not rebuild:  # the usual case, the image exists: no lock to take
        base = local_base(client)
        found = local_image(client, image_tag(client.images.get(base).id)) if base else None
        if found is not None:
            return found
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


def lock_dir() -> Path:
    """A directory of this user's alone for the build lock: $XDG_RUNTIME_DIR/tcplimits, else
    /tmp/tcplimits-<uid>. Per user, so that no other user can hold our lock (and hang our
    runs) or plant a link at its path. Refused unless it is a real directory, ours, that
    nobody else may write."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = (Path(runtime) / "tcplimits" if runtime
            else Path(tempfile.gettempdir()) / f"tcplimits-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise ImageError(f"cannot make the build lock's directory {path}: "
                         f"{err.strerror or err}") from err
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        what = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else
                "not a directory" if not stat.S_ISDIR(st.st_mode) else
                f"owned by uid {st.st_uid}" if st.st_uid != os.geteuid() else
                f"writable by others (mode {stat.S_IMODE(st.st_mode):o})")
        raise ImageError(f"the build lock's directory {path} is {what}: not this user's own; "
                         "remove it, or set XDG_RUNTIME_DIR to a private directory")
    return path


@contextmanager
def _build_lock(log: Log, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise this user's builds: parallel runs must not build the same image twice. The
    holder writes who it is into the lock file, so that a waiter past ``timeout`` names it."""
    path = lock_dir() / "image.lock"
    # O_NOFOLLOW: a link planted at the path is refused, never followed.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise ImageError(f"the build lock {path} is not this user's: remove it")
        end, waiting = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log(f"waiting for {_holder(fd)}, building the image ({path})")
                    waiting = True
                if time.monotonic() >= end:
                    raise ImageError(f"gave up after {timeout:.0f} s waiting for the build lock "
                                     f"{path}, held by {_holder(fd)}; if that process is stuck, "
                                     "stop it") from None
                time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it into the file."""
    said = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return f"tcplimits process {said}" if said else "another tcplimits process"


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
