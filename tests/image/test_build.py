"""The agent image: apt sources parsing and tag hashing (unit), build and run (real engine)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tcplimits.image import base as base_image, build as image
from tcplimits.image.apt_sources import NoDebianArchive, mirror_from_apt_sources
from tcplimits.image.build import ImageError, image_tag

# Made-up mirror hosts: the tests must not name a real one.
MIRROR = "http://mirror.invalid/debian"
OTHER = "https://other.invalid/debian"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- apt sources ------------------------------------------------------------------------


def test_one_line_sources_pick_the_plain_suite(tmp_path):
    sources = write(tmp_path / "sources.list", f"""\
# deb {OTHER} bookworm main
deb-src {OTHER} bookworm main
deb {MIRROR}-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] {MIRROR} bookworm main contrib  # main
deb {MIRROR} bookworm-updates main
""")
    assert mirror_from_apt_sources([sources]) == (MIRROR, "bookworm")


def test_one_line_options_with_spaces(tmp_path):
    sources = write(tmp_path / "a.list", f"deb [ arch=amd64 trusted=yes ] {MIRROR} trixie main\n")
    assert mirror_from_apt_sources([sources]) == (MIRROR, "trixie")


def test_deb822_sources_skip_security_and_updates(tmp_path):
    sources = write(tmp_path / "debian.sources", f"""\
Types: deb
# a comment inside the stanza does not end it
URIs: {MIRROR}-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: {OTHER}
Suites: bookworm
Components: main

Types: deb
URIs: {OTHER}
Suites: bookworm
Enabled: no

Types: deb
# {OTHER}
URIs: {MIRROR}
Suites: bookworm-updates
 bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
""")
    assert mirror_from_apt_sources([sources]) == (MIRROR, "bookworm")


def test_codename_is_preferred_over_an_earlier_plain_suite(tmp_path):
    third_party = write(tmp_path / "a.sources",
                        f"Types: deb\nURIs: {OTHER}\nSuites: nodistro\nComponents: main\n")
    debian = write(tmp_path / "b.list", f"deb {MIRROR} bookworm main\n")
    assert mirror_from_apt_sources([third_party, debian]) == (OTHER, "nodistro")
    assert mirror_from_apt_sources([third_party, debian], codename="bookworm") == (MIRROR, "bookworm")


def test_debian_main_is_preferred_over_dockers_own_repository(tmp_path):
    """A standard Docker-on-Debian install: Docker's repository, same suite, listed first."""
    docker = write(tmp_path / "docker.list", "deb [arch=amd64 signed-by=/etc/apt/keyrings/"
                   f"docker.asc] {OTHER}/linux/debian bookworm stable\n")
    debian = write(tmp_path / "debian.sources", f"Types: deb\nURIs: {MIRROR}\n"
                   "Suites: bookworm bookworm-updates\nComponents: main\n")
    for codename in (None, "bookworm"):
        assert mirror_from_apt_sources([docker, debian], codename=codename) == (MIRROR,
                                                                                 "bookworm")


def test_one_line_and_deb822_files_mix(tmp_path):
    empty = write(tmp_path / "sources.list", "# moved to sources.list.d\n")
    deb822 = write(tmp_path / "debian.sources",
                   f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\n")
    missing = tmp_path / "missing.list"
    assert mirror_from_apt_sources([empty, missing, deb822]) == (MIRROR, "bookworm")


def test_no_debian_entry_is_a_clear_error(tmp_path):
    sources = write(tmp_path / "sources.list", f"""\
# deb {MIRROR} bookworm main
deb {MIRROR} bookworm-security main
deb-src {MIRROR} bookworm main
""")
    with pytest.raises(NoDebianArchive, match="no Debian archive entry"):
        mirror_from_apt_sources([sources])
    with pytest.raises(NoDebianArchive, match="no Debian archive entry"):
        mirror_from_apt_sources([])


def test_no_registry_and_no_debian_archive_says_what_to_do(monkeypatch):
    def no_archive(**_):
        raise NoDebianArchive("no Debian archive entry in the apt sources")

    def no_registry(client, ref):
        raise ImageError(f"pulling {ref}: no answer from the registry in 10s")

    monkeypatch.delenv("TCPLIMITS_BASE_IMAGE", raising=False)
    monkeypatch.setattr(base_image, "mirror_from_apt_sources", no_archive)
    monkeypatch.setattr(base_image, "local_image", lambda client, ref: None)
    monkeypatch.setattr(base_image, "_pull", no_registry)
    with pytest.raises(ImageError, match="(?s)no answer.*no Debian archive.*TCPLIMITS_BASE_IMAGE"):
        base_image.ensure_base(object(), log=lambda line: None)


# --- tag hashing ------------------------------------------------------------------------


@pytest.fixture
def fake_agents(tmp_path, monkeypatch):
    """Two stand-in agent files in tmp_path, returned by agent_files()."""
    folder = tmp_path / "agents"
    folder.mkdir()
    files = [write(folder / "client.py", "print('client')\n"),
             write(folder / "server.py", "print('server')\n")]
    monkeypatch.setattr(image, "agent_files", lambda: list(files))
    return files


def test_tag_format_and_stability(fake_agents):
    tag = image_tag("sha256:" + "a" * 64)
    assert re.fullmatch(r"tcplimits-agent:[0-9a-f]{12}", tag)
    assert image_tag("sha256:" + "a" * 64) == tag


def test_tag_follows_agent_code_and_base(fake_agents):
    base = "sha256:" + "a" * 64
    before = image_tag(base)
    fake_agents[1].write_text("print('server v2')\n")
    changed = image_tag(base)
    assert changed != before
    assert image_tag("sha256:" + "b" * 64) != changed
    fake_agents[1].write_text("print('server')\n")
    assert image_tag(base) == before


def test_tag_follows_agent_names(fake_agents):
    base = "sha256:" + "a" * 64
    before = image_tag(base)
    fake_agents[0].rename(fake_agents[0].with_name("client2.py"))
    fake_agents[0] = fake_agents[0].with_name("client2.py")
    assert image_tag(base) != before


def test_real_agent_files_are_sorted_python_files():
    files = image.agent_files()
    assert files == sorted(files)
    assert all(f.suffix == ".py" and f.parent == image.AGENTS_DIR for f in files)
    assert image.DOCKERFILE.is_file()


# --- bounded pull -----------------------------------------------------------------------


class _SilentRegistryClient:
    """A docker client whose pull never gets an answer, like an unreachable registry."""

    def __init__(self):
        self.release = threading.Event()
        self.api = self

    def pull(self, repository, tag=None, stream=False, decode=False):
        self.release.wait(30)
        raise RuntimeError("gave up")


def test_pull_without_answer_fails_within_the_bound():
    client = _SilentRegistryClient()
    started = time.monotonic()
    try:
        with pytest.raises(ImageError, match="no answer"):
            base_image._pull(client, "python:3.13-slim", answer_seconds=0.3)
        assert time.monotonic() - started < 5
    finally:
        client.release.set()


def test_missing_debootstrap_says_what_to_install_and_installs_nothing(monkeypatch):
    def no_commands(*args, **kwargs):
        raise AssertionError(f"library code ran a command: {args}")

    monkeypatch.setattr(base_image, "_which_debootstrap", lambda: None)
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)  # even as root
    monkeypatch.setattr(base_image.subprocess, "run", no_commands)
    with pytest.raises(ImageError, match="apt-get install debootstrap.*scripts/bootstrap.sh"):
        base_image.debootstrap_path()
    with pytest.raises(ImageError, match="debootstrap is not installed"):
        base_image.build_debian_base(object(), "http://deb.debian.org/debian", "bookworm",
                                     "tcplimits-base:debian-bookworm", log=lambda line: None)


def test_tree_removal_handles_special_files(tmp_path):
    tree = tmp_path / "tcplimits-base-x"
    locked = tree / "root" / "usr"
    locked.mkdir(parents=True)
    os.mkfifo(tree / "root" / "fifo")
    (locked / "file").write_text("x")
    (tree / "root" / "link").symlink_to("/etc")
    locked.chmod(0o555)
    base_image._remove_tree(tree, log=pytest.fail)
    assert not tree.exists()


# --- real engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    docker = pytest.importorskip("docker")
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as err:  # no engine here: the docker tests cannot run
        pytest.skip(f"no Docker engine: {err}")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def agent_image(client):
    if not image.agent_files():
        pytest.skip("no agent programs in src/tcplimits/agents yet")
    return image.ensure_image(client, log=lambda line: print(line))


def run_in(client, img, command):
    """Run command in a container like the experiments do; return its output and exit code."""
    container = client.containers.create(
        img.id, command, user="65534:65534", read_only=True, network_disabled=True,
        labels={"tcplimits": "1"})
    try:
        container.start()
        status = container.wait(timeout=60)
        return container.logs().decode(), status["StatusCode"]
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_image_is_labelled_and_tagged(agent_image, client):
    assert agent_image.labels.get("tcplimits") == "1"
    base_id = client.images.get(image.ensure_base(client, log=lambda line: None)).id
    assert image.image_tag(base_id) in agent_image.tags


@pytest.mark.docker
def test_image_runs_python_and_agents_read_only_as_nobody(agent_image, client):
    script = (
        "import socket, json, resource, os, select, signal, time; "
        "d = '/opt/tcplimits/agents'; "
        "names = sorted(os.listdir(d)); "
        "[open(os.path.join(d, n)).read() for n in names]; "
        "print(json.dumps({'ok': 'ok', 'uid': os.getuid(), 'agents': names, "
        "'unbuffered': os.environ.get('PYTHONUNBUFFERED')}))"
    )
    output, code = run_in(client, agent_image, ["python3", "-c", script])
    assert code == 0, output
    facts = json.loads(output.strip().splitlines()[-1])
    assert facts["uid"] == 65534
    assert facts["agents"] == [f.name for f in image.agent_files()]
    assert facts["unbuffered"] == "1"

    output, code = run_in(client, agent_image,
                          ["python3", "-c", "import socket, json, resource; print('ok')"])
    assert (code, output.strip()) == (0, "ok")


@pytest.mark.docker
def test_second_call_reuses_the_image(agent_image, client, monkeypatch):
    def no_build(**kwargs):
        raise AssertionError("ensure_image built although the image exists")

    monkeypatch.setattr(client.images, "build", no_build)
    assert image.ensure_image(client, log=lambda line: None).id == agent_image.id


@pytest.mark.docker
def test_changed_agent_code_builds_a_new_image(agent_image, client, tmp_path, monkeypatch):
    copies = []
    for path in image.agent_files():
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    copies[-1].write_text(copies[-1].read_text() + "\n# changed by test_image\n")
    monkeypatch.setattr(image, "agent_files", lambda: list(copies))
    changed = image.ensure_image(client, log=lambda line: None)
    try:
        assert changed.id != agent_image.id
        assert not set(changed.tags) & set(agent_image.tags)
        output, code = run_in(client, changed, ["tail", "-n", "1", f"/opt/tcplimits/agents/{copies[-1].name}"])
        assert output.strip() == "# changed by test_image"
    finally:
        client.images.remove(changed.id, force=True)


@pytest.mark.docker
def test_explicit_base_that_cannot_be_had_fails_fast(client, monkeypatch):
    monkeypatch.setenv("TCPLIMITS_BASE_IMAGE", "tcplimits-test-missing-base:nope")
    with pytest.raises(ImageError, match="TCPLIMITS_BASE_IMAGE"):
        image.ensure_base(client, log=lambda line: None)


@pytest.mark.docker
def test_build_error_shows_the_log_tail(agent_image, client, tmp_path, monkeypatch):
    dockerfile = write(tmp_path / "Dockerfile",
                       "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo boom-marker && false\n")
    monkeypatch.setattr(image, "DOCKERFILE", dockerfile)
    with pytest.raises(ImageError, match="(?s)building tcplimits-agent:.*failed.*boom-marker"):
        image.ensure_image(client, log=lambda line: None)
