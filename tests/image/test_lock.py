"""The image build's lock (per user, private, bounded wait naming its holder) and the base
build's commands (bounded, signatures checked, warnings shown). No engine needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tcplimits.image import base as base_image, build as image
from tcplimits.image.build import ImageError


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_lock_lives_in_a_private_directory_of_this_user(runtime, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(image.tempfile, "gettempdir", lambda: str(runtime))
    with image._build_lock(log=pytest.fail):
        pass
    lock_dir = runtime / f"tcplimits-{os.geteuid()}"
    st = lock_dir.stat()
    assert st.st_uid == os.geteuid() and oct(st.st_mode & 0o777) == oct(0o700)
    assert oct((lock_dir / "image.lock").stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize("plant", ["link", "foreign", "group-writable"])
def test_a_lock_directory_not_ours_alone_is_refused(runtime, plant):
    lock_dir = runtime / "tcplimits"
    if plant == "link":
        (runtime / "elsewhere").mkdir()
        lock_dir.symlink_to(runtime / "elsewhere")
    else:
        lock_dir.mkdir(mode=0o700)
        if plant == "foreign":
            os.chown(lock_dir, 65534, 65534) if os.geteuid() == 0 else pytest.skip("root")
        else:
            lock_dir.chmod(0o770)
    with pytest.raises(ImageError, match=f"the build lock's directory {lock_dir} is "):
        with image._build_lock(log=pytest.fail):
            pytest.fail("took a lock in a directory that is not ours alone")
    assert not (runtime / "elsewhere" / "image.lock").exists()


def test_a_link_planted_at_the_lock_is_not_followed(runtime):
    lock_dir = image.lock_dir()
    target = runtime / "target"
    (lock_dir / "image.lock").symlink_to(target)
    with pytest.raises(OSError):
        with image._build_lock(log=pytest.fail):
            pass
    assert not target.exists()


def test_a_held_lock_times_out_naming_its_holder(runtime):
    """Another process holds the lock (as a stuck build would): the wait ends and says who."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tcplimits.image import build as b\n"
         "with b._build_lock(log=print):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in sys.path if p)})
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        with pytest.raises(ImageError) as err:
            with image._build_lock(log=said.append, timeout=1):
                pytest.fail("took a held lock")
        lock = image.lock_dir() / "image.lock"
        assert str(err.value).startswith(f"gave up after 1 s waiting for the build lock {lock}, "
                                         f"held by tcplimits process pid {holder.pid} since ")
        assert said[0].startswith(f"waiting for tcplimits process pid {holder.pid} since ")
    finally:
        holder.kill()
        holder.wait()
    with image._build_lock(log=pytest.fail):  # free again once its holder is gone
        pass


def test_an_existing_image_takes_no_lock(monkeypatch):
    found = object()

    class Images:
        def get(self, ref):
            return type("Image", (), {"id": "sha256:base"})()

    monkeypatch.setattr(image, "local_base", lambda client: "tcplimits-base:debian-x")
    monkeypatch.setattr(image, "local_image", lambda client, ref: found)
    monkeypatch.setattr(image, "_build_lock", lambda log: pytest.fail("took the lock"))
    assert image.ensure_image(type("Client", (), {"images": Images()})()) is found


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(ImageError, match="^debootstrap did not finish within 1 s; stopped it$"):
        base_image._run(["sh", "-c", f"sleep 300 & echo $! > {marker}; wait"],
                        what="debootstrap", timeout=1, log=pytest.fail)
    child = int(marker.read_text())
    for _ in range(50):  # the kill is asynchronous
        if not os.path.exists(f"/proc/{child}") or " Z " in open(f"/proc/{child}/stat").read():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the command's child {child} outlived the timeout")
    assert time.monotonic() - started < 60


def test_debootstrap_checks_signatures_and_its_warnings_are_shown(tmp_path, monkeypatch):
    fake = tmp_path / "debootstrap"
    args = tmp_path / "args"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {args}\necho 'I: Retrieving Release'\n"
                    "echo 'W: Cannot check Release signature'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(base_image, "debootstrap_path", lambda: str(fake))
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)
    said = []
    with pytest.raises(ImageError, match="debootstrap failed"):
        base_image.build_debian_base(object(), "http://mirror.invalid/debian", "bookworm",
                                     "tcplimits-base:test", log=said.append)
    assert args.read_text().split()[:5] == [
        "--variant=minbase", "--include=python3",
        f"--keyring={base_image.DEBIAN_KEYRING}", "--force-check-gpg", "bookworm"]
    assert "debootstrap: W: Cannot check Release signature" in said


def test_no_keyring_no_debootstrap(tmp_path, monkeypatch):
    monkeypatch.setattr(base_image, "debootstrap_path", lambda: "/bin/false")
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)
    monkeypatch.setattr(base_image, "DEBIAN_KEYRING", tmp_path / "missing.gpg")
    monkeypatch.setattr(base_image, "_run", lambda *a, **k: pytest.fail("ran debootstrap"))
    with pytest.raises(ImageError, match="apt-get install debian-archive-keyring"):
        base_image.build_debian_base(object(), "http://mirror.invalid/debian", "bookworm",
                                     "tcplimits-base:test", log=lambda line: None)


def test_sigterm_during_debootstrap_stops_it_and_removes_the_tree(tmp_path, monkeypatch):
    """The signal arrives while debootstrap runs (it sends it to us itself): its process
    group is killed and the tcplimits-base-* tree removed, then the interruption goes on."""
    from tcplimits.engine.cleanup import Interrupted, signals_raise

    fake = tmp_path / "debootstrap"
    fake.write_text("#!/bin/sh\nmkdir -p \"$6/proc\"; sleep 300 &\necho $! > "
                    f"{tmp_path}/child\nkill -TERM $PPID\nwait\n")
    fake.chmod(0o755)
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(base_image.tempfile, "tempdir", str(work))
    monkeypatch.setattr(base_image, "debootstrap_path", lambda: str(fake))
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)
    with pytest.raises(Interrupted):
        with signals_raise():
            base_image.build_debian_base(object(), "http://mirror.invalid/debian", "bookworm",
                                         "tcplimits-base:test", log=lambda m: None)
    assert os.listdir(work) == []
    child = int((tmp_path / "child").read_text())
    for _ in range(50):
        if not os.path.exists(f"/proc/{child}") or " Z " in open(f"/proc/{child}/stat").read():
            break
        time.sleep(0.1)
    else:
        pytest.fail("debootstrap's child outlived the interruption")
