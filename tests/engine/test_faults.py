"""Fault injection with real containers: every fault ends with one clear line, a run.json whose
status, fault and reason say what happened, the right exit code, and nothing of the run left
on the engine. Other engineers' runs share the engine: resources are counted by run id.

Most faults are injected into a "slow" run: a server of 2 workers x nofile 100 accepts 192
connections and its accept queue 9 more; the other client connections wait out a connect
timeout, which leaves seconds to kill something mid-run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.engine.helpers import labelled  # the run's labelled containers and networks
from tcplimits import CLIENT_LABEL, ROLE_LABEL, RUN_LABEL, results
from tcplimits.engine.faults import EXIT_FAILED, EXIT_MACHINE, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.docker

SLOW = ["--port-range", "40000-40299", "--nofile", "1000", "--server-nofile", "100",
        "--server-workers", "2", "--backlog", "8", "--connect-timeout", "10"]
QUICK = ["--port-range", "40000-40199", "--nofile", "1000"]


def new_id(name: str) -> str:
    return f"fault-{name}-{uuid.uuid4().hex[:6]}"


def start(run_id: str, out: Path, flags: list[str], env: dict | None = None,
          prefix: list[str] | None = None, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "tcplimits", "run", *flags,
                             "--run-id", run_id, "--out", str(out), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run(run_id, out, flags, *extra, env=None):
    return finish(start(run_id, out, flags, env, None, *extra))


def message(stderr: str) -> str:
    """The command's own closing line (progress lines of the engine come before it)."""
    lines = [line for line in stderr.strip().splitlines() if line.startswith("tcplimits run:")]
    assert len(lines) == 1, stderr
    return lines[0]


def connecting(engine, run_id: str, timeout: float = 300):
    """Wait until the run's client is connecting (its first progress line); its containers."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = {c.labels.get(ROLE_LABEL) + c.labels.get(CLIENT_LABEL, ""): c
                 for c in engine.containers.list(filters={"label": f"{RUN_LABEL}={run_id}"})}
        client = found.get("client1")
        if client is not None and b'"progress"' in client.logs():
            return found
        time.sleep(0.2)
    pytest.fail(f"run {run_id} never started connecting")


def record_of(out: Path) -> dict:
    return json.loads((out / results.RUN_JSON).read_text())


# --------------------------------------------------------------------------- the engine


class EngineProxy:
    """A Unix socket in front of the engine's that the test can cut and restore: the Docker
    daemon "lost" for this run alone, with the real daemon untouched."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock"):
        self.path, self.target = path, target
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def up(self) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self.listener = self.listener, None
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        self.path.unlink()
        with self.lock:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self.conns.clear()

    def _accept(self, listener) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            with self.lock:
                self.conns += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_engine_unreachable_at_start(engine, tmp_path):
    run_id, out = new_id("unreachable"), tmp_path / "run"
    code, _, err = run(run_id, out, QUICK, "--exit-zero",
                       env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"})
    assert code == EXIT_MACHINE  # not hidden by --exit-zero: a workflow retries the point
    assert "cannot reach the Docker engine at unix://" in message(err)
    record = record_of(out)
    assert record["status"] == "failed" and record["fault"] == "engine_unreachable"
    assert "cannot reach the Docker engine" in record["reason"]
    assert labelled(engine, run_id) == ([], [])


def test_engine_lost_mid_run_then_back(engine, tmp_path):
    """The engine stops answering while clients connect and answers again 3 s later (a
    daemon restart, seen from the client): the run fails and still removes everything."""
    proxy = EngineProxy(tmp_path / "engine.sock")
    proxy.up()
    run_id, out = new_id("lost"), tmp_path / "run"
    proc = start(run_id, out, SLOW, {"DOCKER_HOST": proxy.url})
    connecting(engine, run_id)
    proxy.cut()
    time.sleep(3)
    assert labelled(engine, run_id)[0], "the run's containers should outlive the cut"
    proxy.up()
    code, _, err = finish(proc)
    assert code == EXIT_MACHINE
    assert "lost the Docker engine at unix://" in message(err)
    record = record_of(out)
    assert record["status"] == "failed" and record["fault"] == "engine_lost"
    assert "still on it" not in record["reason"]
    assert labelled(engine, run_id) == ([], [])


def _start_with_short_wait(run_id: str, out: Path, env: dict, engine_return_s: float):
    """`tcplimits run` that waits only ``engine_return_s`` for a lost engine to come back."""
    code = ("import sys\n"
            "from tcplimits.engine import teardown\n"
            f"teardown.ENGINE_RETURN_S = {engine_return_s}\n"
            "from tcplimits import cli\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    return subprocess.Popen([sys.executable, "-c", code, "run", *SLOW, "--run-id", run_id,
                             "--out", str(out), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def test_engine_lost_for_good_leaves_what_the_next_sweep_removes(engine, tmp_path):
    """The engine never answers again: the run says what it could not remove; once the run
    has ended its owner is provably dead and `tcplimits clean` removes the rest."""
    proxy = EngineProxy(tmp_path / "engine.sock")
    proxy.up()
    run_id, out = new_id("lost-for-good"), tmp_path / "run"
    proc = _start_with_short_wait(run_id, out, {"DOCKER_HOST": proxy.url}, engine_return_s=2)
    connecting(engine, run_id)
    proxy.cut()
    code, _, err = finish(proc)
    assert code == EXIT_MACHINE
    line = message(err)
    assert "lost the Docker engine at unix://" in line and "are still on it" in line
    record = record_of(out)
    assert record["status"] == "failed" and record["fault"] == "engine_lost"
    assert labelled(engine, run_id)[0], "expected the run's containers to be left"
    clean = subprocess.run([sys.executable, "-m", "tcplimits", "clean"], capture_output=True,
                           text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert f"tcplimits-{run_id}-" in clean.stdout  # listed as it is removed
    assert labelled(engine, run_id) == ([], [])


# --------------------------------------------------------------------------- containers


@pytest.mark.parametrize("role", ["client1", "server"])
def test_container_killed_mid_run(engine, tmp_path, role):
    run_id, out = new_id(f"kill-{role}"), tmp_path / "run"
    proc = start(run_id, out, SLOW)
    connecting(engine, run_id)[role].kill()  # docker kill: SIGKILL
    code, stdout, _ = finish(proc)
    assert code == EXIT_FAILED
    record = record_of(out)
    assert record["status"] == "failed" and record["fault"] == "container_exited"
    assert record["reason"].startswith(f"{role} container killed (SIGKILL, exit code 137)")
    assert stdout.startswith(f"run {run_id}: failed: {record['reason']} in ")
    assert labelled(engine, run_id) == ([], [])


def test_server_worker_dies_mid_run(engine, tmp_path):
    run_id, out = new_id("worker"), tmp_path / "run"
    proc = start(run_id, out, SLOW)
    server = connecting(engine, run_id)["server"]
    # One worker (a child of the server's main process, pid 1) killed from inside.
    kill_one = ("import os\n"
                "for p in sorted(os.listdir('/proc'), key=lambda p: (len(p), p)):\n"
                "    if p.isdigit() and open(f'/proc/{p}/stat').read().split(') ')[1].split()[1] == '1':\n"
                "        os.kill(int(p), 9); print(p); break\n")
    killed = server.exec_run(["python3", "-c", kill_one], user="65534:65534")
    assert killed.exit_code == 0 and killed.output.strip(), killed.output
    code, stdout, _ = finish(proc)
    assert code == EXIT_FAILED
    record = record_of(out)
    assert record["status"] == "failed" and record["fault"] == "worker_died"
    pid = killed.output.decode().strip()
    assert f"server worker 1 pid {pid} killed by SIGKILL" in record["reason"] \
        or f"server worker 2 pid {pid} killed by SIGKILL" in record["reason"]
    assert stdout.startswith(f"run {run_id}: failed: server worker")
    assert labelled(engine, run_id) == ([], [])


def test_container_killed_by_its_memory_limit(engine, tmp_path):
    """Memory taken inside the client container beyond its limit, with the agents marked as the
    OOM killer's first choice (any process may raise its own user's oom_score_adj): the
    kernel kills them and the engine reports it (an "oom" event, State.OOMKilled)."""
    run_id, out = new_id("oom"), tmp_path / "run"
    proc = start(run_id, out, SLOW)
    client = connecting(engine, run_id)["client1"]
    hog = ("import os\n"
           "for p in os.listdir('/proc'):\n"
           "    if p.isdigit() and int(p) != os.getpid():\n"
           "        try:\n"
           "            open(f'/proc/{p}/oom_score_adj', 'w').write('1000')\n"
           "        except OSError:\n"
           "            pass\n"
           "hog = bytearray(1024 * 2**20)\n")
    client.exec_run(["python3", "-c", hog], user="65534:65534")
    code, stdout, _ = finish(proc)
    assert code == EXIT_FAILED
    record = record_of(out)
    limit = client.attrs["HostConfig"]["Memory"] / 2**20
    assert record["status"] == "failed" and record["fault"] == "oom", record["reason"]
    assert record["reason"].startswith(
        f"client1 container killed by its memory limit of {limit:.0f} MiB (OOM)")
    assert stdout.startswith(f"run {run_id}: failed: client1 container killed by its memory")
    assert labelled(engine, run_id) == ([], [])


# --------------------------------------------------------------------------- --out


def _mount_tmpfs(path: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tcplimits-test", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path):
    mounted = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, options)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_out_unwritable_is_refused_before_any_container(engine, small_fs):
    target = small_fs("readonly", "ro,size=1m")
    run_id = new_id("readonly")
    code, _, err = run(run_id, target / "run", QUICK)
    assert code == EXIT_USAGE
    assert message(err) == (f"tcplimits run: --out {target / 'run'}: cannot write there: "
                            "Read-only file system")
    assert labelled(engine, run_id) == ([], [])
    assert not (target / "run").exists()


def test_out_without_room_is_refused_before_any_container(engine, small_fs):
    target = small_fs("tiny", "size=64k")
    run_id = new_id("full")
    code, _, err = run(run_id, target / "run", QUICK)
    assert code == EXIT_MACHINE
    line = message(err)
    assert f"--out {target / 'run'}: " in line and "KiB free, the run needs about" in line
    assert labelled(engine, run_id) == ([], [])
    assert not (target / "run" / results.RUN_JSON).exists()


def test_disk_full_mid_run(engine, small_fs):
    """The pre-flight passed; the disk fills up while clients connect (another writer):
    the run removes its containers, leaves no partial files and says what happened."""
    target = small_fs("filling", "size=2m")
    run_id, out = new_id("diskfull"), target / "run"
    proc = start(run_id, out, SLOW)
    connecting(engine, run_id)
    fd = os.open(target / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    code, _, err = finish(proc)
    assert code == EXIT_MACHINE
    assert message(err).startswith(f"tcplimits run: could not write the run directory {out}: "
                                   "No space left on device")
    assert not list(out.glob("*.parquet"))
    if (out / results.RUN_JSON).exists():  # written when clearing made room for it
        assert record_of(out)["fault"] == "out_unwritable"
    assert labelled(engine, run_id) == ([], [])


def test_out_holding_an_earlier_run_needs_force_and_is_then_replaced(engine, tmp_path):
    out = tmp_path / "run"
    (out / results.LOGS_DIR).mkdir(parents=True)
    results.write_json({"run_id": "earlier", "status": "ok"}, out / results.RUN_JSON)
    (out / results.LOGS_DIR / "client2.log").write_text("of the earlier run\n")
    run_id = new_id("force")
    code, _, err = run(run_id, out, QUICK)
    assert code == EXIT_USAGE
    assert message(err) == (f"tcplimits run: --out {out}: already holds run earlier; pass "
                            "--force to replace it, or choose another directory")
    assert record_of(out)["run_id"] == "earlier"  # untouched
    assert labelled(engine, run_id) == ([], [])

    code, stdout, _ = run(run_id, out, QUICK, "--force")
    assert code == EXIT_OK, stdout
    assert record_of(out)["run_id"] == run_id
    assert not (out / results.LOGS_DIR / "client2.log").exists()  # nothing of the earlier run
    assert labelled(engine, run_id) == ([], [])


def test_force_never_clears_a_directory_that_is_not_a_run(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious\n")
    code, _, err = run(new_id("stranger"), out, QUICK, "--force")
    assert code == EXIT_USAGE
    assert "not empty and not a run directory (holds thesis.tex)" in message(err)
    assert (out / "thesis.tex").read_text() == "precious\n"


# --------------------------------------------------------------------------- ownership


def test_runs_in_two_pid_namespaces_leave_each_other_alone(engine, tmp_path):
    """Run A in this PID namespace, run B and a `tcplimits clean` in fresh ones (as CI jobs in
    containers sharing the engine's socket): in B's namespace A's pid does not exist, which
    the old hostname:pid owner took for dead. Both runs must finish untouched."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a second PID namespace")
    own_ns = ["unshare", "--pid", "--fork", "--mount-proc"]
    flags = [*SLOW[:-1], "5"]  # a shorter connect timeout: both runs overlap anyway
    a_id, b_id = new_id("ns-a"), new_id("ns-b")
    a = start(a_id, tmp_path / "a", flags)
    connecting(engine, a_id)
    b = start(b_id, tmp_path / "b", flags, None, own_ns)  # its start sweeps leftovers
    connecting(engine, b_id)
    assert labelled(engine, a_id)[0], "B's sweep removed A's live containers"
    clean = subprocess.run([*own_ns, sys.executable, "-m", "tcplimits", "clean"],
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert labelled(engine, a_id)[0] and labelled(engine, b_id)[0]
    for proc, run_id, out in ((a, a_id, tmp_path / "a"), (b, b_id, tmp_path / "b")):
        code, stdout, err = finish(proc)
        assert code == EXIT_OK, (stdout, err)
        assert record_of(out)["status"] == "ok"
        assert labelled(engine, run_id) == ([], [])
