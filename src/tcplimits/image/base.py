"""The base image the agent image is built FROM.

The official `python:3.13-slim` when it is in the local cache or can be pulled. Where no
registry is reachable (the pull fails within seconds), a Debian base is built once with
debootstrap from the host's own apt mirror and imported as `tcplimits-base:debian-<suite>`.
`TCPLIMITS_BASE_IMAGE` names a base to use instead and skips that choice.

Library code installs nothing on the host: a missing debootstrap is reported with the
command that installs it (scripts/bootstrap.sh does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import docker
import docker.errors
from docker.utils import parse_repository_tag

from tcplimits import LABEL
from tcplimits.image.apt_sources import NoDebianArchive, host_codename, mirror_from_apt_sources

BASE_REPO = "tcplimits-base"
DEFAULT_BASE = "python:3.13-slim"
BASE_ENV = "TCPLIMITS_BASE_IMAGE"

# A reachable registry answers a pull (auth + manifest) well within this; an unreachable
# one must not cost a long network timeout before we fall back to the Debian base.
PULL_ANSWER_SECONDS = 10.0

# Bounds on the base build's commands: debootstrap took about a minute here (a slow mirror may
# take several); past these, something hangs, and the run says so rather than wait forever.
DEBOOTSTRAP_TIMEOUT_S = 1800
TAR_TIMEOUT_S = 600
# Release files are checked against Debian's archive keys (package debian-archive-keyring):
# an unsigned or wrongly signed mirror fails the build instead of passing with a warning.
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# Dockerfile instructions applied to the imported debootstrap tree: a plain import has
# no environment, so PATH must be set for `python3` to be found.
DEBIAN_BASE_CHANGES = [
    f"LABEL {LABEL}=1",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]

Log = Callable[[str], None]


class ImageError(RuntimeError):
    """The agent image or its base cannot be had; the message says what to do next."""


def local_image(client: docker.DockerClient, ref: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def local_base(client: docker.DockerClient) -> str | None:
    """The base ensure_base would pick, if it is already in the engine's cache (no pull, no
    build: nothing that needs the build lock); None otherwise."""
    chosen = os.environ.get(BASE_ENV)
    if chosen:
        return chosen if local_image(client, chosen) is not None else None
    if local_image(client, DEFAULT_BASE) is not None:
        return DEFAULT_BASE
    try:
        _, suite = mirror_from_apt_sources(codename=host_codename())
    except NoDebianArchive:
        return None
    tag = f"{BASE_REPO}:debian-{suite}"
    return tag if local_image(client, tag) is not None else None


def ensure_base(client: docker.DockerClient, *, base: str | None = None,
                log: Log = print) -> str:
    """The reference of the base image to build FROM, making it available first.

    Order: `base` or $TCPLIMITS_BASE_IMAGE (pulled only if absent); the official slim image
    or our Debian base from the local cache; a pull of the slim image bounded to seconds;
    a Debian base built with debootstrap from the host's apt mirror.
    """
    chosen = base or os.environ.get(BASE_ENV)
    if chosen:
        if local_image(client, chosen) is None:
            log(f"pulling {chosen}")
            try:
                _pull(client, chosen)
            except ImageError as err:
                raise ImageError(f"{err}. Load {chosen} into the engine (docker load), or "
                                 f"unset {BASE_ENV} to let tcplimits pick a base") from err
        return chosen

    if local_image(client, DEFAULT_BASE) is not None:
        return DEFAULT_BASE
    try:
        mirror, suite = mirror_from_apt_sources(codename=host_codename())
        no_debian = None
    except NoDebianArchive as err:
        mirror, suite = "", ""
        no_debian = f"{err}; set {BASE_ENV} to a local image that has python3"
    debian_tag = f"{BASE_REPO}:debian-{suite}"
    # Checked before any pull: once built, the Debian base stays the base, so the agent
    # image tag stays stable and no run pays again for a pull that failed before.
    if no_debian is None and local_image(client, debian_tag) is not None:
        return debian_tag

    log(f"pulling {DEFAULT_BASE}")
    try:
        _pull(client, DEFAULT_BASE)
        return DEFAULT_BASE
    except ImageError as err:
        if no_debian is not None:
            raise ImageError(f"{err}; and no Debian base can be built here: {no_debian}") from err
        log(f"cannot pull {DEFAULT_BASE} ({err}); using a Debian base instead")
    build_debian_base(client, mirror, suite, debian_tag, log=log)
    return debian_tag


def _pull(client: docker.DockerClient, ref: str,
          answer_seconds: float = PULL_ANSWER_SECONDS) -> None:
    """Pull `ref`, giving up if the engine has not started the pull within answer_seconds.

    The engine answers only once the registry has resolved the image, so the bound covers
    an unreachable registry without cutting short a slow but progressing download.
    """
    repository, tag = parse_repository_tag(ref)
    answered = threading.Event()
    failure: list[BaseException] = []

    def pull() -> None:
        try:
            events = client.api.pull(repository, tag=tag or "latest", stream=True, decode=True)
            answered.set()
            for event in events:
                if "error" in event:
                    raise ImageError(str(event["error"]).strip())
        except Exception as err:  # reported to the caller below
            failure.append(err)
        finally:
            answered.set()

    # A daemon thread: when the deadline passes, it is left blocked on the socket.
    worker = threading.Thread(target=pull, name=f"pull {ref}", daemon=True)
    worker.start()
    if not answered.wait(answer_seconds):
        raise ImageError(f"pulling {ref}: no answer from the registry in {answer_seconds:.0f}s")
    worker.join()
    if failure:
        err = failure[0]
        detail = err.explanation if isinstance(err, docker.errors.APIError) else err
        raise ImageError(f"pulling {ref} failed: {detail}") from err


def build_debian_base(client: docker.DockerClient, mirror: str, suite: str, tag: str, *,
                      log: Log = print) -> str:
    """Debootstrap a minimal Debian with python3, import it as `tag`; return the image id."""
    if os.geteuid() != 0:
        raise ImageError(f"building the Debian base needs root (debootstrap): run "
                         f"`tcplimits image` once as root, or set {BASE_ENV} to a local "
                         f"image that has python3")
    debootstrap = debootstrap_path()
    if not DEBIAN_KEYRING.is_file():
        raise ImageError(f"Debian's archive keyring {DEBIAN_KEYRING} is missing, so the mirror's "
                         "signatures cannot be checked: install it (as root: `apt-get install "
                         f"debian-archive-keyring`), or set {BASE_ENV} to a local image that "
                         "has python3")
    log(f"building Debian base from {mirror} ({suite}), takes a few minutes once")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tcplimits-base-"))
    try:
        root = workdir / "root"
        _run([debootstrap, "--variant=minbase", "--include=python3",
              f"--keyring={DEBIAN_KEYRING}", "--force-check-gpg", suite, str(root), mirror],
             what="debootstrap", timeout=DEBOOTSTRAP_TIMEOUT_S, log=log)
        _trim_tree(root)
        tarball = workdir / "rootfs.tar"
        # /dev is left empty: the engine mounts its own, and device nodes in a layer
        # are refused by some storage drivers.
        _run(["tar", "--numeric-owner", "--exclude=./dev/*", "-C", str(root),
              "-cf", str(tarball), "."], what="tar", timeout=TAR_TIMEOUT_S, log=log)
        log(f"importing {tag}")
        repository, name = parse_repository_tag(tag)
        try:
            result = client.api.import_image(src=str(tarball), repository=repository,
                                             tag=name, changes=DEBIAN_BASE_CHANGES)
        except docker.errors.APIError as err:
            raise ImageError(f"importing {tag} failed: {err.explanation or err}") from err
        _raise_for_import_error(result, tag)
    finally:
        from tcplimits.engine.cleanup import shielded

        with shielded():  # a second SIGTERM must not leave the tree (proc mounted in it)
            _remove_tree(workdir, log)
    image = local_image(client, tag)
    if image is None:
        raise ImageError(f"importing {tag} reported success but the image is missing")
    log(f"built {tag} in {time.monotonic() - started:.0f}s")
    return image.id


def debootstrap_path() -> str:
    """Path to debootstrap; ImageError saying how to install it when missing."""
    found = _which_debootstrap()
    if found:
        return found
    raise ImageError(f"debootstrap is not installed: install it (as root: `apt-get install "
                     f"debootstrap`, or run scripts/bootstrap.sh) and run again, or set "
                     f"{BASE_ENV} to a local image that has python3")


def _which_debootstrap() -> str | None:
    # /usr/sbin is often missing from PATH outside a root login shell.
    return shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")


def _run(cmd: list[str], *, what: str, timeout: float, log: Log = print) -> None:
    """Run a command in its own process group, within ``timeout`` seconds. Its warnings
    (debootstrap's "W:" lines) are shown; on a timeout, an error or an interruption (SIGTERM
    raised as an exception), the whole group is killed: debootstrap's chroot and dpkg too."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException as err:
        _kill_group(proc)
        if isinstance(err, subprocess.TimeoutExpired):
            raise ImageError(f"{what} did not finish within {timeout:.0f} s; stopped it") from None
        raise
    for line in output.splitlines():
        if line.startswith("W:"):
            log(f"{what}: {line}")
    if proc.returncode != 0:
        tail = "\n".join(output.rstrip().splitlines()[-20:])
        raise ImageError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _trim_tree(root: Path) -> None:
    """Drop apt's downloaded packages and lists: caches the image never uses."""
    for cache in (root / "var/cache/apt/archives", root / "var/lib/apt/lists"):
        for entry in cache.glob("*"):
            if entry.is_file() and not entry.is_symlink():
                entry.unlink()


def _raise_for_import_error(result: str, tag: str) -> None:
    # The engine reports some import failures inside a 200 response, as JSON lines.
    for line in str(result).splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("error"):
            raise ImageError(f"importing {tag} failed: {event['error']}")


def _remove_tree(path: Path, log: Log) -> None:
    """Delete a debootstrap tree, never following a mount out of it.

    A killed debootstrap can leave /proc, /sys or bind-mounted /dev nodes mounted inside
    the tree; those are unmounted first, and --one-file-system keeps rm on the tree itself.
    """
    try:
        for mount in sorted(_mounts_under(path), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True,
                       timeout=TAR_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass  # said below
    if path.exists():
        log(f"could not delete {path} completely; remove it by hand")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    # Mount points are the second field, with spaces escaped as \040.
    points = (line.split()[1].replace("\\040", " ") for line in lines if line.strip())
    return [p for p in points if p.startswith(prefix)]


