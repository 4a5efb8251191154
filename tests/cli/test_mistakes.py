"""A newcomer's mistakes, each through `tcplimits` and through `snakemake -n`: one line on
stderr naming the problem (and the fix where there is one), exit code 2 (4 for the engine),
no traceback. No Docker engine is needed: nothing gets as far as a container."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.workflow.harness import Workdir
from tcplimits import cli
from tcplimits.config import grid

ROOT = Path(__file__).resolve().parents[2]

# name -> (config file text, words the one line must hold). Each goes through `tcplimits
# points`; those in THROUGH_SNAKEMAKE through `snakemake -n` too (a few seconds each).
MISTAKES = {
    "typo key": ("grid:\n  nofile: [100]\nexperiment:\n  backlogg: 5\n",
                 ["experiment.backlogg=5", "unknown key", "did you mean backlog?"]),
    "typo top-level key": ("gird:\n  nofile: [100]\n", ["gird", "did you mean grid?"]),
    "typo grid key": ("grid:\n  nofiles: [100]\n", ["grid.nofiles", "did you mean nofile?"]),
    "bad value": ("grid:\n  nofile: [100, 0]\n", ["grid.nofile[1]=0", "minimum of 1"]),
    "reversed range": ("grid:\n  port_range: [41000-40000]\n",
                       ["port_range", "41000-40000", "reversed range"]),
    "bad word": ("grid:\n  mode: [hold, chrun]\n", ["grid.mode[1]", "chrun"]),
    "yaml syntax": ("grid:\n  nofile: [100\n  procs: [1]\n",
                    [":3:8: YAML syntax error", "expected ',' or ']'"]),
    "yaml tab": ("grid:\n\tnofile: [100]\n", [":2:1: YAML syntax error"]),
    "not a mapping": ("- nofile: 100\n", ["(top level)", "expected a mapping"]),
    "empty": ("", ["grid=None: no points"]),
}
THROUGH_SNAKEMAKE = {"typo key", "typo top-level key", "bad value", "reversed range",
                     "yaml syntax", "yaml tab", "not a mapping", "empty"}
# Mistakes in the file itself, which two different checks see: a --configfile is read by
# Snakemake before the workflow starts (the profiles' logger plugin,
# snakemake_logger_plugin_tcplimits, says them), the default config by the Snakefile before
# Snakemake reads it. Both ways are tried.
FILE_LEVEL = {"yaml syntax", "yaml tab", "not a mapping", "empty"}


def one_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The only line of stderr (Snakemake's own notice about the profile aside)."""
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith("Using workflow specific profile")]
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def tcplimits(*args: str, cwd: Path = ROOT, prefix: tuple[str, ...] = (),
              env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "tcplimits", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Workdir:
    # the real tcplimits: were any job to start, it would create containers
    return Workdir(tmp_path_factory.mktemp("mistakes"), fake=False)


@contextmanager
def default_config(workdir: Workdir):
    """The workdir's config/config.yaml, for a test to break: put back as it was after."""
    path = workdir.path / "config" / "config.yaml"
    saved = path.read_text()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        path.write_text(saved)


@pytest.mark.parametrize("name", MISTAKES)
def test_a_config_mistake_is_one_line_through_both(workdir, name):
    text, words = MISTAKES[name]
    path = workdir.path / "config" / f"mistake-{name.replace(' ', '-')}.yaml"
    path.write_text(text)
    relative = str(path.relative_to(workdir.path))
    line = one_line(tcplimits("points", relative, cwd=workdir.path))
    for word in [relative, *words]:
        assert word in line, line
    assert line.startswith(f"tcplimits points: {relative}")
    # The Snakemake habit is accepted too, and says the same.
    assert one_line(tcplimits("points", "--configfile", relative, cwd=workdir.path)) == line
    if name not in THROUGH_SNAKEMAKE:
        return
    # The workflow says the same line.
    expected = line.removeprefix("tcplimits points: ")
    proc = workdir.snakemake("-n", "--configfile", relative, check=False)
    assert one_line(proc) == expected
    if name in FILE_LEVEL:
        with default_config(workdir) as default:
            default.write_text(text)
            proc = workdir.snakemake("-n", check=False)
        assert one_line(proc) == expected.replace(relative, "config/config.yaml", 1)
    assert not (workdir.path / "results").exists()


def test_a_missing_config_file(workdir):
    line = one_line(tcplimits("points", "config/nope.yaml", cwd=workdir.path))
    assert line.startswith("tcplimits points: config/nope.yaml: no such file (here: ")
    assert "config/churn.yaml" in line  # the files there are named
    proc = workdir.snakemake("-n", "--configfile", "config/nope.yaml", check=False)
    assert one_line(proc) == line.removeprefix("tcplimits points: ")
    with default_config(workdir) as default:
        default.unlink()
        proc = workdir.snakemake("-n", check=False)
    assert one_line(proc).startswith("config/config.yaml: no such file (here: ")
    line = one_line(tcplimits("points", "config", cwd=workdir.path))
    assert line == "tcplimits points: config: is a directory, not a config file"
    proc = workdir.snakemake("-n", "--configfile", "config", check=False)
    assert one_line(proc) == "config: is a directory, not a config file"


def _without_privilege() -> tuple[str, ...] | None:
    """A prefix under which this process's files and sockets owned by another user are
    refused as they would be to a user: root loses CAP_DAC_OVERRIDE in a new user namespace
    (it keeps its uid, so its own files stay readable). None when that cannot be had."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True)
    return ("unshare", "--user") if probe.returncode == 0 else None


def _make_foreign(path: Path) -> None:
    """Owned by someone else (as root) or by no one we are (otherwise), readable by its owner
    only."""
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        path.chmod(0o600)
    else:
        path.chmod(0)


def test_an_unreadable_config_file(workdir):
    prefix = _without_privilege()
    if prefix is None:
        pytest.skip("needs unshare --user to drop root's file privileges")
    path = workdir.path / "config" / "secret.yaml"
    path.write_text("grid:\n  nofile: [100]\n")
    _make_foreign(path)
    line = one_line(tcplimits("points", "config/secret.yaml", cwd=workdir.path, prefix=prefix))
    assert line == ("tcplimits points: config/secret.yaml: cannot read it (permission denied): "
                    "chmod a+r config/secret.yaml, or copy it somewhere you may read")
    expected = line.removeprefix("tcplimits points: ")

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, "snakemake", "--cores", "1", "-n", *args],
                              cwd=workdir.path, capture_output=True, text=True, timeout=300)

    assert one_line(snakemake("--configfile", "config/secret.yaml")) == expected
    # the workflow's default config, unreadable
    with default_config(workdir) as default:
        shutil.copy(path, default)
        _make_foreign(default)
        proc = snakemake()
    assert one_line(proc) == expected.replace("config/secret.yaml", "config/config.yaml")


def test_an_unreadable_config_in_process(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("grid: {}\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    assert cli.main(["points", str(path)]) == 2
    assert capsys.readouterr().err == (f"tcplimits points: {path}: cannot read it (permission "
                                       f"denied): chmod a+r {path}, or copy it somewhere you "
                                       "may read\n")


@pytest.fixture
def foreign_socket(tmp_path):
    """A listening Docker-like socket this user may not open."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    _make_foreign(path)
    yield path
    server.close()


@pytest.mark.parametrize("command", [["probe"], ["clean"], ["image"],
                                     ["run", "--out", "OUT"]])
def test_a_docker_socket_the_user_may_not_open(foreign_socket, tmp_path, command):
    prefix = _without_privilege()
    if prefix is None:
        pytest.skip("needs unshare --user to drop root's file privileges")
    args = [str(tmp_path / "run") if a == "OUT" else a for a in command]
    proc = tcplimits(*args, prefix=prefix, env={"DOCKER_HOST": f"unix://{foreign_socket}"})
    line = one_line(proc, code=4)
    assert line == (f"tcplimits {command[0]}: permission denied on the Docker socket "
                    f"{foreign_socket}: add your user to the docker group (sudo usermod -aG "
                    "docker $USER, then log in again), run as root, or point DOCKER_HOST at "
                    "an engine you may use (rootless Docker)")


def test_no_engine_at_all_is_exit_4(tmp_path):
    proc = tcplimits("probe", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert one_line(proc, code=4).startswith(
        f"tcplimits probe: cannot reach the Docker engine at unix://{tmp_path}/none.sock "
        "(no such file or directory); start the daemon")


FLAG_MISTAKES = [
    (["run", "--nofiles", "5", "--out", "x"], "--nofiles: did you mean --nofile?"),
    (["run", "--mode", "chrun", "--out", "x"], "invalid choice: 'chrun'"),
    (["run", "--nofile", "0", "--out", "x"], "tcplimits run: --nofile 0: must be at least 1"),
    # refused before any container: the engine publishes no port on an internal network
    (["run", "--nat", "published", "--out", "x"],
     "tcplimits run: --nat 'published': topology published cannot run here"),
    (["run", "--port-range", "9-1", "--out", "x"], "--port-range '9-1': reversed range"),
    (["run", "--nofile", "10"], "the following arguments are required: --out"),
    (["rnu"], "invalid choice: 'rnu'"),
    (["points", "a.yaml", "--configfile", "b.yaml"], "two configs given"),
    (["report", "--dataset", "no/such/dir", "--out", "x"], "--dataset no/such/dir: no such"),
]


@pytest.mark.parametrize("args,words", FLAG_MISTAKES, ids=[" ".join(a) for a, _ in FLAG_MISTAKES])
def test_a_flag_mistake_is_one_line(tmp_path, args, words):
    assert words in one_line(tcplimits(*args, cwd=tmp_path))
    assert not (tmp_path / "x").exists()


def test_a_missing_extra_is_named(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_jsonschema(name, *args, **kwargs):
        if name.split(".")[0] == "jsonschema":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "jsonschema", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_jsonschema)
    monkeypatch.setattr("importlib.import_module",
                        lambda name, package=None: no_jsonschema(name))
    assert cli.main(["points", str(ROOT / "config" / "tiny.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == ("tcplimits points: validating a config needs jsonschema, from the 'workflow' "
                   "extra: pip install 'tcplimits[workflow]' (in a checkout: "
                   "scripts/bootstrap.sh installs every extra into .venv)\n")


def test_every_config_mistake_names_a_known_key_when_one_is_close():
    with pytest.raises(grid.ConfigError, match=r"did you mean server_workers\?"):
        grid.points({"grid": {"nofile": [10]}, "experiment": {"server_worker": 2}})
    with pytest.raises(grid.ConfigError) as err:
        grid.points({"grid": {"nofile": [10]}, "experiment": {"zzz": 2}})
    assert "did you mean" not in str(err.value)


def test_permission_denied_in_process(monkeypatch, capsys):
    """The words docker-py gives a user outside the docker group (where unshare is missing,
    the test above cannot make one)."""
    import docker

    def refused(*args, **kwargs):
        raise docker.errors.DockerException(
            "Error while fetching server API version: ('Connection aborted.', "
            "PermissionError(13, 'Permission denied'))")

    monkeypatch.setattr(docker, "from_env", refused)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert cli.main(["clean"]) == 4
    assert capsys.readouterr().err == (
        "tcplimits clean: permission denied on the Docker socket /var/run/docker.sock: add "
        "your user to the docker group (sudo usermod -aG docker $USER, then log in again), "
        "run as root, or point DOCKER_HOST at an engine you may use (rootless Docker)\n")
