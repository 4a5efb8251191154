"""The agent image: python3 plus the agent programs, built once per code change.

The tag `tcplimits-agent:<12 hex>` is a hash of the agent programs, the Dockerfile and the
base image id, so an unchanged tree reuses its image and a changed one gets a new image.

The base is the official `python:3.13-slim` when it is in the local cache or can be pulled.
Where no registry is reachable (the pull fails within seconds), a Debian base is built once
with debootstrap from the host's own apt mirror and imported as `tcplimits-base:debian-<suite>`.
`TCPLIMITS_BASE_IMAGE` names a base to use instead and skips that choice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import docker
import docker.errors
from docker.utils import parse_repository_tag

from . import LABEL

PACKAGE_DIR = Path(__file__).parent
AGENTS_DIR = PACKAGE_DIR / "agents"
DOCKERFILE = PACKAGE_DIR / "docker" / "Dockerfile"

AGENT_REPO = "tcplimits-agent"
BASE_REPO = "tcplimits-base"
DEFAULT_BASE = "python:3.13-slim"
BASE_ENV = "TCPLIMITS_BASE_IMAGE"

# A reachable registry answers a pull (auth + manifest) well within this; an unreachable
# one must not cost a long network timeout before we fall back to the Debian base.
PULL_ANSWER_SECONDS = 10.0

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")

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


# --- agent image ------------------------------------------------------------------------


def agent_files() -> list[Path]:
    """The agent programs that go into the image, sorted."""
    return sorted(AGENTS_DIR.glob("*.py"))


def image_tag(base_id: str) -> str:
    """`tcplimits-agent:<12 hex>` for the current agents, Dockerfile and base image id."""
    digest = hashlib.sha256()
    for path in agent_files():
        # Names count too: renaming an agent changes what the containers run.
        _hash_part(digest, path.name.encode())
        _hash_part(digest, path.read_bytes())
    _hash_part(digest, DOCKERFILE.read_bytes())
    _hash_part(digest, base_id.encode())
    return f"{AGENT_REPO}:{digest.hexdigest()[:12]}"


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
    old = _local_image(client, tag)
    if old is not None and not rebuild:
        return old

    log(f"building {tag} from {base}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tcplimits-build-") as context:
        _write_context(Path(context), files)
        try:
            image, _ = client.images.build(
                path=context, tag=tag, buildargs={"BASE_IMAGE": base},
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


def _write_context(context: Path, files: Iterable[Path]) -> None:
    """A minimal build context: the Dockerfile and the agents, readable by any user."""
    shutil.copyfile(DOCKERFILE, context / "Dockerfile")
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


def _local_image(client: docker.DockerClient, ref: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


# --- base image -------------------------------------------------------------------------


def ensure_base(client: docker.DockerClient, *, base: str | None = None,
                log: Log = print) -> str:
    """The reference of the base image to build FROM, making it available first.

    Order: `base` or $TCPLIMITS_BASE_IMAGE (pulled only if absent); the official slim image
    or our Debian base from the local cache; a pull of the slim image bounded to seconds;
    a Debian base built with debootstrap from the host's apt mirror.
    """
    chosen = base or os.environ.get(BASE_ENV)
    if chosen:
        if _local_image(client, chosen) is None:
            log(f"pulling {chosen}")
            try:
                _pull(client, chosen)
            except ImageError as err:
                raise ImageError(f"{err}. Load {chosen} into the engine (docker load), or "
                                 f"unset {BASE_ENV} to let tcplimits pick a base") from err
        return chosen

    if _local_image(client, DEFAULT_BASE) is not None:
        return DEFAULT_BASE
    try:
        mirror, suite = mirror_from_apt_sources(codename=_host_codename())
        no_debian = None
    except ImageError as err:
        mirror, suite, no_debian = "", "", err
    debian_tag = f"{BASE_REPO}:debian-{suite}"
    # Checked before any pull: once built, the Debian base stays the base, so the agent
    # image tag stays stable and no run pays again for a pull that failed before.
    if no_debian is None and _local_image(client, debian_tag) is not None:
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
    debootstrap = _ensure_debootstrap(log)
    log(f"building Debian base from {mirror} ({suite}), takes a few minutes once")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tcplimits-base-"))
    try:
        root = workdir / "root"
        _run([debootstrap, "--variant=minbase", "--include=python3", suite, str(root), mirror],
             what="debootstrap")
        _trim_tree(root)
        tarball = workdir / "rootfs.tar"
        # /dev is left empty: the engine mounts its own, and device nodes in a layer
        # are refused by some storage drivers.
        _run(["tar", "--numeric-owner", "--exclude=./dev/*", "-C", str(root),
              "-cf", str(tarball), "."], what="tar")
        log(f"importing {tag}")
        repository, name = parse_repository_tag(tag)
        try:
            result = client.api.import_image(src=str(tarball), repository=repository,
                                             tag=name, changes=DEBIAN_BASE_CHANGES)
        except docker.errors.APIError as err:
            raise ImageError(f"importing {tag} failed: {err.explanation or err}") from err
        _raise_for_import_error(result, tag)
    finally:
        _remove_tree(workdir, log)
    image = _local_image(client, tag)
    if image is None:
        raise ImageError(f"importing {tag} reported success but the image is missing")
    log(f"built {tag} in {time.monotonic() - started:.0f}s")
    return image.id


def _ensure_debootstrap(log: Log) -> str:
    """Path to debootstrap, installing it with apt-get when we are root and can."""
    found = _which_debootstrap()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing debootstrap with apt-get")
        install = ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            # A fresh machine may have no package lists yet.
            _run(["apt-get", "update"], what="apt-get update", env=env)
            _run(install, what="apt-get install debootstrap", env=env)
        found = _which_debootstrap()
        if found:
            return found
    raise ImageError(f"debootstrap is not installed: install it (as root: `apt-get install "
                     f"debootstrap`) and run again, or set {BASE_ENV} to a local image that "
                     f"has python3")


def _which_debootstrap() -> str | None:
    # /usr/sbin is often missing from PATH outside a root login shell.
    return shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")


def _run(cmd: list[str], *, what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.rstrip().splitlines()[-20:])
        raise ImageError(f"{what} failed (exit {proc.returncode}):\n{tail}")


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
    for mount in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True)
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


# --- apt sources ------------------------------------------------------------------------

_PLAIN_SUITE = re.compile(r"[a-z][a-z0-9]*")
_MIRROR_SCHEMES = ("http://", "https://", "file:/")


def mirror_from_apt_sources(paths: Iterable[Path | str] | None = None,
                            codename: str | None = None) -> tuple[str, str]:
    """(mirror URI, suite) of the main Debian archive in the apt sources.

    Reads one-line `.list` files and deb822 `.sources` files (default: the host's). The
    main archive is a `deb` entry whose suite is a plain codename such as `bookworm`, not
    `bookworm-security` or `bookworm-updates`; one whose suite is `codename` is preferred.
    """
    if paths is None:
        paths = [APT_SOURCES, *sorted(APT_SOURCES_DIR.glob("*.list")),
                 *sorted(APT_SOURCES_DIR.glob("*.sources"))]
    paths = [Path(p) for p in paths]
    candidates: list[tuple[str, str]] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uri, suite in entries:
            if _PLAIN_SUITE.fullmatch(suite) and uri.startswith(_MIRROR_SCHEMES):
                candidates.append((uri, suite))
    if not candidates:
        shown = ", ".join(str(p) for p in paths) or "no files"
        raise ImageError(f"no Debian archive entry (a `deb` line with a plain codename "
                         f"suite) in the apt sources ({shown}); set {BASE_ENV} to a local "
                         f"image that has python3")
    for uri, suite in candidates:
        if suite == codename:
            return uri, suite
    return candidates[0]


def _one_line_entries(text: str) -> list[tuple[str, str]]:
    """(uri, suite) of each `deb` line: `deb [options] uri suite components...`."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        rest = words[1:]
        if rest[0].startswith("["):
            # Options may contain spaces: skip up to the word that closes the bracket.
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            entries.append((rest[0], rest[1]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, str]]:
    """(uri, suite) for each URI and suite of each enabled `deb` stanza."""
    entries = []
    for stanza in _deb822_stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        for uri in stanza.get("uris", "").split():
            entries.extend((uri, suite) for suite in stanza.get("suites", "").split())
    return entries


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue  # comments may sit inside a stanza without ending it
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                current[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _host_codename() -> str | None:
    """VERSION_CODENAME from /etc/os-release, to prefer the host's own suite."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", text, re.MULTILINE)
    return (match.group(1) or None) if match else None
