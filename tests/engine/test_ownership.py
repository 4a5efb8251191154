"""Owner identity: what the sweep may judge dead, and what it must leave alone."""

import os
import subprocess
import sys

from tcplimits.engine import ownership
from tcplimits.engine.ownership import Liveness, Owner


def test_label_round_trips_and_names_this_process():
    me = ownership.current()
    assert me.pid == os.getpid()
    assert Owner.parse(me.label()) == me
    assert ownership.liveness(me.label()) is Liveness.ALIVE


def test_a_finished_process_is_dead_and_a_reused_pid_is_not_its_owner():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    me = ownership.current()
    label = Owner(me.boot_id, me.pid_ns, child.pid, ownership.start_time(child.pid)).label()
    assert ownership.liveness(label) is Liveness.ALIVE
    # The same pid with another start time is another process: the owner is gone.
    reused = Owner(me.boot_id, me.pid_ns, child.pid, ownership.start_time(child.pid) + 1)
    assert ownership.liveness(reused.label()) is Liveness.DEAD
    child.communicate(b"")
    assert ownership.liveness(label) is Liveness.DEAD


def test_owners_that_cannot_be_judged_are_unknown_never_dead():
    me = ownership.current()
    for label in (None, "", "somehost:1", "v2:garbled",
                  Owner("another-boot", me.pid_ns, 999999999, 1).label(),
                  Owner(me.boot_id, "4:1", 999999999, 1).label()):
        assert ownership.liveness(label) is Liveness.UNKNOWN, label


def test_another_pid_namespace_sees_our_live_run_as_unknown():
    """unshare --pid --fork --mount-proc: pids there mean other processes than here."""
    import shutil

    import pytest

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    me = ownership.current()
    code = ("import sys; from tcplimits.engine import ownership as o; "
            "print(o.liveness(sys.argv[1]).value, o.current().label())")
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                           code, me.label()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    verdict, their_label = proc.stdout.split()
    assert verdict == "unknown"
    theirs = Owner.parse(their_label)
    assert theirs.pid_ns != me.pid_ns and theirs.boot_id == me.boot_id
    # Their process is gone now, but it lived in another namespace: not provably dead here.
    assert ownership.liveness(their_label) is Liveness.UNKNOWN


class _Resource:
    def __init__(self, name, owner, uid=os.getuid()):
        self.attrs = {"Names": [f"/{name}"], "Labels": {"tcplimits": "1", "tcplimits.run": name,
                                                        "tcplimits.owner": owner}}
        if uid is not None:
            self.attrs["Labels"]["tcplimits.uid"] = str(uid)
        self.removed = False

    def remove(self, **_):
        self.removed = True


def _fake_engine(monkeypatch, resources):
    import docker

    class Listing:
        def __init__(self, items):
            self.items = items

        def list(self, **_):
            return [r for r in self.items if not r.removed]

    class Engine:
        containers, networks = Listing(resources), Listing([])

    monkeypatch.setattr(docker, "from_env", lambda: Engine())


def test_clean_all_lists_and_needs_yes(monkeypatch, capsys):
    from tcplimits.cli import main

    me = ownership.current()
    live = _Resource("live-run", me.label())
    foreign = _Resource("other-namespace", Owner(me.boot_id, "4:1", 5, 6).label())
    dead = _Resource("dead-run", Owner(me.boot_id, me.pid_ns, 999999999, 1).label())

    users = _Resource("another-user", Owner(me.boot_id, "4:1", 7, 8).label(), uid=4242)
    older = _Resource("no-user-label", Owner(me.boot_id, "4:1", 9, 9).label(), uid=None)
    _fake_engine(monkeypatch, [live, foreign, dead, users, older])

    assert main(["clean", "--all"]) == 2
    out, err = capsys.readouterr()
    for name, owner in (("live-run", "alive"), ("other-namespace", "unknown"),
                        ("dead-run", "dead")):
        assert f"container {name} (run {name}, owner {owner})" in out
    assert "another-user" not in out and "no-user-label" not in out
    assert "add --yes to remove these" in err
    assert not any(r.removed for r in (live, foreign, dead, users, older))

    assert main(["clean"]) == 0  # only the provably dead, and says what it kept
    out = capsys.readouterr().out
    assert dead.removed and not (live.removed or foreign.removed)
    assert "kept 4 resource(s) whose owner is alive or cannot be proven dead" in out

    assert main(["clean", "--all", "--yes"]) == 0  # this user's own
    assert live.removed and foreign.removed
    assert not (users.removed or older.removed)
    assert "kept 2 resource(s) of other users or of an older tcplimits" in capsys.readouterr().out

    assert main(["clean", "--everyone", "--yes"]) == 2  # only with --all
    assert main(["clean", "--all", "--everyone"]) == 2
    assert "container another-user (run another-user, owner unknown, uid 4242)" in \
        capsys.readouterr().out
    assert main(["clean", "--all", "--everyone", "--yes"]) == 0
    assert users.removed and older.removed


_HIDEPID_SCRIPT = r"""
set -eu
mount -t proc -o hidepid=2 proc /proc
sleep 300 &
live=$!
python3 - "$live" <<'PY'
import os, subprocess, sys
from tcplimits.engine import ownership as o
me = o.current()
live = int(sys.argv[1])
dead = subprocess.Popen(["true"]); dead.wait()
labels = [o.Owner(me.boot_id, me.pid_ns, live, o.start_time(live)).label(),
          o.Owner(me.boot_id, me.pid_ns, dead.pid, 1).label()]
user = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                       sys.executable, "-I", "-c",
                       # the module alone: the other user may not read this site-packages
                       "import sys, importlib.util as u; "
                       "s = u.spec_from_file_location('o', sys.argv[1]); "
                       "o = sys.modules['o'] = u.module_from_spec(s); s.loader.exec_module(o); "
                       "print(' '.join(o.liveness(l).value for l in sys.argv[2:]))",
                       o.__file__, *labels],
                      capture_output=True, text=True)
hidden = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                         "test", "-e", f"/proc/{live}"]).returncode != 0
print(user.stdout.strip() or user.stderr.strip(), "hidden" if hidden else "visible")
PY
kill $live
"""


def test_hidepid_hides_a_live_owner_from_another_user_and_it_is_kept():
    """/proc with hidepid=2, in a private mount and PID namespace (never the host's /proc): a
    non-root user cannot see root's live process, which must not be judged dead; a pid the
    kernel says is gone (ESRCH) still is."""
    import shutil

    import pytest

    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root, unshare and setpriv")
    proc = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                           "sh", "-c", _HIDEPID_SCRIPT], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              p for p in sys.path if p)})
    assert proc.returncode == 0, proc.stderr
    live, dead, seen = proc.stdout.split()
    assert seen == "hidden"  # hidepid took effect: the old /proc-only check said "dead"
    assert live == "unknown"
    assert dead == "dead"
