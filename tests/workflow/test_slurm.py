"""The sweep on a real Slurm cluster: scripts/slurm-local.sh starts a one-node cluster from
Debian's packages (slurmctld, slurmd, slurmdbd + MariaDB, munge), config/tiny.yaml runs
through workflow/profiles/slurm (snakemake-executor-plugin-slurm), and the dataset must hold
the same counts as the local run, every experiment having been a Slurm job of its own.

Skipped only where Slurm cannot be installed (not root, or no apt-get); where it can, a
missing daemon or plugin is a failure: scripts/bootstrap.sh --test installs them. The test
starts the cluster and stops it again (a cluster that was already up is left up).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from tests.workflow.harness import ROOT, Workdir, assert_tiny_dataset, engine_ready

from tcplimits.config import grid

SCRIPT = ROOT / "scripts" / "slurm-local.sh"
PROFILE = "workflow/profiles/slurm"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
TOOLS = ("slurmctld", "slurmd", "slurmdbd", "sacct", "munged", "mariadbd")


def _why_not_installable() -> str | None:
    if os.geteuid() != 0:
        return "Slurm's daemons need root (slurmd starts jobs as their user)"
    if not shutil.which("apt-get"):
        return "Slurm is installed from Debian's packages, and this machine has no apt-get"
    return None


SKIP = _why_not_installable()
pytestmark = [pytest.mark.skipif(SKIP is not None, reason=SKIP or ""), pytest.mark.slurm]


def local(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"slurm-local.sh {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def daemon_pids() -> dict[str, int | None]:
    """Each daemon's pid as `slurm-local.sh status` reports it (None: not running)."""
    out = local("status", check=False).stdout
    pids: dict[str, int | None] = {}
    for name in DAEMONS:
        m = re.search(rf"^{name}: running \(pid (\d+)\)", out, re.M)
        pids[name] = int(m.group(1)) if m else None
    return pids


def sacct(job_ids: list[str]) -> list[dict[str, str]]:
    fields = ["JobIDRaw", "State", "NodeList", "Start", "End", "ExitCode"]
    out = subprocess.run(["sacct", "-X", "-n", "--parsable2", "--format=" + ",".join(fields),
                          "-j", ",".join(job_ids)], capture_output=True, text=True, check=True)
    return [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def cluster():
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    assert not missing, f"{missing} missing: run scripts/bootstrap.sh --test"
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm"), \
        "snakemake-executor-plugin-slurm missing: run scripts/bootstrap.sh --test"
    was_up = local("status", check=False).returncode == 0
    local("start")
    yield
    if not was_up:
        local("stop")


def test_start_is_idempotent(cluster):
    before = daemon_pids()
    assert all(before.values()), before
    local("start")
    assert daemon_pids() == before  # nothing restarted
    status = local("status").stdout
    assert f"node {socket.gethostname()}: idle" in status


def test_lint_with_the_slurm_profile(tmp_path):
    wd = Workdir(tmp_path, fake=False)
    lint = wd.snakemake("--lint", "--workflow-profile", PROFILE, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "good condition" in lint.stdout + lint.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_tiny_sweep_through_slurm(cluster, tmp_path):
    reason = engine_ready()
    if reason:
        pytest.skip(reason)
    wd = Workdir(tmp_path, fake=False)
    # The plugin first asks for job states after 40 s; 5 s keeps this test short.
    proc = wd.snakemake("--workflow-profile", PROFILE, "--configfile", "config/tiny.yaml",
                        "--slurm-init-seconds-before-status-checks", "5", timeout=900)
    output = proc.stdout + proc.stderr
    runs = assert_tiny_dataset(wd.path / "results" / "dataset")

    # Every experiment, and the image, was submitted as a Slurm job of its own ...
    # ("Job 5 has been submitted with SLURM jobid 7 (log: .../slurm_logs/rule_experiment/<point>/7.log)")
    submitted = re.findall(r"SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/(?:(\S+)/)?\d+\.log",
                           output)
    by_rule: dict[str, dict[str, str]] = {}
    for job_id, rule, point in submitted:
        by_rule.setdefault(rule, {})[point] = job_id
    points = {p.id for p in grid.points(grid.load_config(ROOT / "config" / "tiny.yaml"))}
    assert set(by_rule.get("experiment", {})) == points == set(runs["run_id"]), output
    assert len(by_rule.get("image", {})) == 1, output
    # ... the dataset and the report ran where Snakemake runs
    assert re.search(r"^localrule dataset:", output, re.M), output

    # ... which Slurm's accounting saw complete on this node, one at a time (--exclusive:
    # each job asks for one CPU, so without it two would share the node's two CPUs).
    experiment_ids = list(by_rule["experiment"].values())
    jobs = sacct(experiment_ids + list(by_rule["image"].values()))
    assert {j["JobIDRaw"] for j in jobs} == {job_id for job_id, _, _ in submitted}
    node = socket.gethostname()
    for job in jobs:
        assert (job["State"], job["ExitCode"], job["NodeList"]) == ("COMPLETED", "0:0", node)
    spans = sorted((datetime.fromisoformat(j["Start"]), datetime.fromisoformat(j["End"]))
                   for j in jobs if j["JobIDRaw"] in experiment_ids)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans

    # Each job's Slurm log is kept and names its job id; the experiment's own log is there.
    for point, job_id in by_rule["experiment"].items():
        slurm_log = wd.path / f".snakemake/slurm_logs/rule_experiment/{point}/{job_id}.log"
        assert slurm_log.exists(), slurm_log
        assert (wd.path / f"results/logs/experiment/{point}.log").read_text()

    # The host each point ran on is in the dataset; the jobs ran this checkout's tcplimits
    # (they inherit Snakemake's environment, PYTHONPATH included).
    assert set(runs["env_hostname"]) == {node}
    report = (wd.path / "results" / "report" / "index.html").read_text()
    assert f"ran on one host, <code>{node}</code>" in report
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert all(sha.startswith(head) for sha in runs["env_git_sha"]), runs["env_git_sha"]


def test_stop_leaves_no_daemon(cluster):
    pids = daemon_pids()
    local("stop")
    try:
        assert all(pid is None for pid in daemon_pids().values())
        for name, pid in pids.items():
            assert pid is None or not Path(f"/proc/{pid}").exists(), f"{name} {pid} still runs"
        assert not Path("/etc/slurm/slurm.conf").is_symlink()
        local("stop")  # stopping a stopped cluster is fine
    finally:
        local("start")  # the fixture stops it again unless it was up before the tests
