"""The Snakemake workflow, run as a user runs it, in a temporary copy of the repository.

Most tests put a fake `tcplimits` first on PATH: `run` writes a run directory like the
engine's (clients hold what the model predicts) without Docker, the other commands write
their outputs, and `dataset` is the real one. So the DAG, the rerun rules, keep-going and
the resource limit are checked by real Snakemake runs in seconds. The end-to-end test at
the bottom runs real containers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import polars as pl
import pytest

import yaml

from tcplimits.config import grid
from tests.workflow.harness import ROOT, Workdir, assert_tiny_dataset, engine_ready

PROFILE = "workflow/profiles/default"


def tiny() -> dict:
    return grid.load_config(ROOT / "config" / "tiny.yaml")


@pytest.fixture
def wd(tmp_path) -> Workdir:
    return Workdir(tmp_path)


def test_dry_run_plans_every_point(wd):
    jobs = wd.plan()
    expected = {p.id for p in grid.points(grid.load_config(ROOT / "config" / "config.yaml"))}
    assert {Path(o).parent.name for o in jobs["experiment"]} == expected
    assert len(jobs["experiment"]) == len(expected)
    assert len(jobs["image"]) == len(jobs["dataset"]) == 1
    assert jobs["report"] == ["results/report/index.html"]
    assert not wd.calls.exists()  # a dry run runs nothing


def test_a_configfile_replaces_the_default_config(wd):
    expected = {p.id for p in grid.points(tiny())}
    assert wd.planned_points("--configfile", "config/tiny.yaml") == expected
    # --config still overrides single keys on top of it
    reps = wd.planned_points("--configfile", "config/tiny.yaml", "--config", "repetitions=2")
    assert reps == expected | {f"{i}_rep2" for i in expected}


def test_edit_the_grid_and_rerun(wd):
    cfg = tiny()
    name = wd.write_config("sweep.yaml", cfg)
    first = {p.id for p in grid.points(cfg)}
    wd.snakemake("--configfile", name)
    assert sorted(c["run_id"] for c in wd.runs()) == sorted(first)
    runs = pl.read_parquet(wd.path / "results/dataset/runs.parquet")
    assert set(runs["run_id"]) == first
    assert sum("image" in c for c in map(json.loads, wd.calls.read_text().splitlines())) == 1

    # unchanged: nothing to do
    assert wd.plan("--configfile", name) == {}

    # a new point: only its experiment, then the dataset again
    cfg["points"].append({"port_range": "41000-41099", "nofile": 15000, "clients": 1})
    new = grid.point_id(grid.RunParams(port_range="41000-41099"))
    wd.write_config("sweep.yaml", cfg)
    jobs = wd.plan("--configfile", name)
    assert {Path(o).parent.name for o in jobs["experiment"]} == {new}
    assert set(jobs) <= {"experiment", "dataset", "report", "all"}
    wd.snakemake("--configfile", name)
    assert [c["run_id"] for c in wd.runs()[len(first):]] == [new]
    assert pl.read_parquet(wd.path / "results/dataset/runs.parquet").height == len(first) + 1

    # a changed parameter that is not part of the id (timeout) reruns only that point
    cfg["points"][0]["timeout"] = 120
    wd.write_config("sweep.yaml", cfg)
    touched = grid.point_id(grid.RunParams.from_mapping(
        {**cfg["experiment"], **cfg["points"][0]}))
    assert wd.planned_points("--configfile", name) == {touched}
    wd.snakemake("--configfile", name)
    assert wd.runs()[-1]["run_id"] == touched and "120.0" in wd.runs()[-1]["flags"]

    # a changed physical parameter is a new point; the old one leaves the dataset
    cfg["points"][0]["nofile"] = 16000
    wd.write_config("sweep.yaml", cfg)
    assert len(wd.planned_points("--configfile", name)) == 1
    wd.snakemake("--configfile", name)
    runs = pl.read_parquet(wd.path / "results/dataset/runs.parquet")
    assert touched not in set(runs["run_id"]) and runs.height == len(first) + 1

    # a removed point: no experiment, the dataset is rebuilt without it
    cfg["points"].pop()
    wd.write_config("sweep.yaml", cfg)
    jobs = wd.plan("--configfile", name)
    assert "experiment" not in jobs and "dataset" in jobs
    wd.snakemake("--configfile", name)
    assert pl.read_parquet(wd.path / "results/dataset/runs.parquet").height == len(first)

    # an experiment default reaches every point
    cfg["experiment"]["connect_timeout"] = 5
    wd.write_config("sweep.yaml", cfg)
    assert len(wd.planned_points("--configfile", name)) == len(first)


def test_the_images_the_points_need_are_built_before_them(wd):
    """A point behind a NAT needs the router's image, a real server the servers' image: a job
    builds each before the points that need it, and a config that gains its first such
    point builds the image and runs that point, in the same invocation, and nothing else."""
    def image_calls():
        return [c["flags"] for c in map(json.loads, wd.calls.read_text().splitlines())
                if c.get("image")]

    cfg = tiny()
    name = wd.write_config("sweep.yaml", cfg)
    wd.snakemake("--configfile", name)
    assert image_calls() == [["image", "--stamp", "results/image.txt"]]

    nat = {"port_range": "40000-40199", "nofile": 1000, "clients": 2, "nat": "gateway",
           "nat_port_range": "40000-40099"}
    cfg["points"].append(nat)
    wd.write_config("sweep.yaml", cfg)
    jobs = wd.plan("--configfile", name)
    assert jobs["extra_image"] == ["results/image-router.txt"] and "image" not in jobs
    assert len(jobs["experiment"]) == 1
    wd.snakemake("--configfile", name)
    assert image_calls()[-1] == ["image", "--router", "--stamp", "results/image-router.txt"]
    router_runs = [c for c in wd.runs() if "gateway" in c["flags"]]
    assert len(router_runs) == 1 and router_runs[0]["start"] >= os.path.getmtime(
        wd.path / "results/image-router.txt")

    # a second point behind the NAT: its experiment only; a real server: the servers' image
    cfg["points"] += [{**nat, "clients": 3},
                      {"port_range": "40000-40199", "nofile": 1000, "server": "nginx"}]
    wd.write_config("sweep.yaml", cfg)
    jobs = wd.plan("--configfile", name)
    assert jobs["extra_image"] == ["results/image-servers.txt"]
    assert len(jobs["experiment"]) == 2
    wd.snakemake("--configfile", name)
    assert [c[1] for c in image_calls()] == ["--stamp", "--router", "--servers"]
    assert wd.plan("--configfile", name) == {}  # the same points: nothing to redo


def test_snakemakes_own_report_holds_the_page_summary_and_dataset(wd):
    wd.snakemake("--configfile", "config/tiny.yaml")
    assert (wd.path / "results/report/config.yaml").read_text() == (
        wd.path / "config/tiny.yaml").read_text()  # the config it ran with, beside the page
    wd.snakemake("--configfile", "config/tiny.yaml", "--report", "provenance.zip")
    with zipfile.ZipFile(wd.path / "provenance.zip") as z:
        names = z.namelist()
        page = next(z.read(n).decode() for n in names if n.endswith("/report.html"))
    for name in ("index.html", "summary.txt", "runs.parquet", "runs.csv", "dictionary.csv"):
        assert any(n.endswith(f"/{name}") for n in names), (name, names)
    for caption in ("page", "summary", "data", "dataset"):  # each output's caption is shown
        words = (ROOT / "workflow/report" / f"{caption}.rst").read_text().split()
        plain = next(words[i:i + 4] for i in range(len(words))
                     if all(re.fullmatch(r"[a-z]+", w) for w in words[i:i + 4]))
        assert " ".join(plain) in page, caption


def test_failed_points_are_recorded_and_do_not_stop_the_others(wd):
    cfg = tiny()
    cfg["points"] += [{"port_range": "42000-42099", "max_connections": 14},  # run fails
                      {"port_range": "43000-43099", "max_connections": 13}]  # engine crashes
    name = wd.write_config("sweep.yaml", cfg)
    proc = wd.snakemake("--configfile", name, check=False)
    assert proc.returncode != 0  # the crash is reported...
    ran = {c["run_id"] for c in wd.runs()}
    ids = [p.id for p in grid.points(cfg)]
    assert ran == set(ids[:-1])  # ...after every other point ran (keep-going)
    assert "fake engine crash" in (wd.path / f"results/logs/experiment/{ids[-1]}.log").read_text()

    cfg["points"].pop()
    wd.write_config("sweep.yaml", cfg)
    proc = wd.snakemake("--configfile", name)
    # the sweep's summary at the end names the failed point and its reason
    assert f"failed: 1 point, no measurement:\n  {ids[-2]}: fake failure\n" in proc.stdout
    runs = pl.read_parquet(wd.path / "results/dataset/runs.parquet")
    failed = runs.filter(pl.col("status") == "failed")
    assert failed["run_id"].to_list() == [ids[-2]] and failed["reason"][0] == "fake failure"
    assert set(runs["run_id"]) == set(ids[:-1])


def _overlaps(calls: list[dict]) -> int:
    spans = sorted((c["start"], c["end"]) for c in calls)
    return sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])


@pytest.mark.parametrize("profile", [True, False], ids=["profile", "no-profile"])
def test_one_experiment_at_a_time_by_default(wd, profile):
    wd.env["FAKE_TCPLIMITS_SLEEP"] = "0.6"
    proc = wd.snakemake("results/dataset/runs.parquet", "--cores", "4", "--configfile",
                        "config/tiny.yaml", profile=profile)
    assert ("workflow specific profile" in proc.stderr) == profile
    assert len(wd.runs()) == 3 and _overlaps(wd.runs()) == 0


def test_the_limit_can_be_raised(wd):
    wd.env["FAKE_TCPLIMITS_SLEEP"] = "1.5"
    wd.snakemake("results/dataset/runs.parquet", "--cores", "4", "--resources",
                 "docker_runs=3", "--configfile", "config/tiny.yaml")
    assert len(wd.runs()) == 3 and _overlaps(wd.runs()) >= 1


# Bad configs and what the output must name (key, value).
BAD_CONFIGS = [
    ({"grid": {"port_range": ["41000-40000"]}}, ["port_range", "41000-40000"]),
    ({"grid": {"port_range": ["abc"]}}, ["port_range", "abc"]),
    ({"points": [{"port_range": "80-9000"}]}, ["port_range", "80-9000"]),
    ({"grid": {"nofile": [0]}}, ["nofile", "0"]),
    ({"grid": {"clients": ["many"]}}, ["clients", "many"]),
    ({"grid": {"nofile": [100], "colour": ["red"]}}, ["colour"]),
    ({"points": [{"procs": 2, "size": 3}]}, ["size"]),
    ({"grid": {"procs": [1]}, "experiment": {"backlogg": 5}}, ["backlogg"]),
    ({"grid": {"procs": [1]}, "extra": 1}, ["extra"]),
    ({"grid": {"procs": [1]}, "repetitions": 0}, ["repetitions", "0"]),
]


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=[str(b[1]) for b in BAD_CONFIGS])
def test_a_bad_config_stops_before_any_job(tmp_path, bad):
    # the real tcplimits: were any job to start, it would create containers
    wd = Workdir(tmp_path, fake=False)
    config, names = bad
    name = wd.write_config("bad.yaml", config)
    proc = wd.snakemake("--configfile", name, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for word in names:
        assert word in output, output
    # No job started, so no container either (other sessions share the engine: a global
    # count of labelled containers would see theirs come and go).
    assert not (wd.path / "results").exists()
    assert not re.search(r"^(local)?rule \w+:", output, flags=re.M), output


def test_lint_and_format(wd):
    lint = wd.snakemake("--lint", profile=False, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "good condition" in lint.stdout + lint.stderr
    fmt = subprocess.run(["snakefmt", "--check", "Snakefile", "workflow"], cwd=ROOT,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_the_profile_holds_the_defaults():
    profile = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    assert profile["keep-going"] is True
    assert "docker_runs=1" in profile["resources"]


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    # every extra's own packages (an extra such as all refers to the others: tcplimits[...])
    wanted = pyproject["dependencies"] + [
        requirement for extra in extras.values() for requirement in extra
        if not requirement.startswith("tcplimits[")]
    assert {"workflow", "report", "browser", "slurm", "test", "all"} <= set(extras)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert (ROOT / "environment.yml").resolve() == ROOT / "workflow" / "envs" / "tcplimits.yaml"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in conda}
    conda_names = {"docker": "docker-py", "snakemake": "snakemake-minimal"}
    for requirement in wanted:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()
        assert name in names or conda_names.get(name) in names, name
    assert any(d.startswith("python") for d in conda)
    # Nothing relative to the file: Snakemake builds the environment from a copy of it.
    assert all(isinstance(d, str) for d in env["dependencies"])


def test_every_rule_names_the_deployable_environment():
    rules = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert 'CONDA_ENV = "../envs/tcplimits.yaml"' in common
    found = 0
    for path in rules:
        text = path.read_text()
        rules_here = re.findall(r"^rule \w+:", text, flags=re.M)
        assert len(rules_here) == text.count("        CONDA_ENV"), path.name
        found += len(rules_here)
    assert found == 5  # image, extra_image, experiment, dataset, report


def test_post_deploy_installs_this_checkout(tmp_path):
    """The script Snakemake runs in a new conda environment installs the checkout from any
    working directory: tried here in a virtual environment, run from elsewhere."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    script = ROOT / "workflow" / "envs" / "tcplimits.post-deploy.sh"
    subprocess.run(["/usr/bin/env", "bash", str(script)], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import tcplimits; print(tcplimits.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()) == ROOT / "src" / "tcplimits" / "__init__.py"


# --- end to end, real containers ---------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_end_to_end_tiny_sweep(tmp_path):
    reason = engine_ready()
    if reason:
        pytest.skip(reason)
    wd = Workdir(tmp_path, fake=False)
    # The default target: every point, the dataset and the report.
    proc = wd.snakemake("--configfile", "config/tiny.yaml", timeout=900)
    runs = assert_tiny_dataset(wd.path / "results" / "dataset")
    # it ends with the sweep's summary, which the report job wrote beside the page
    summary = (wd.path / "results" / "report" / "summary.txt").read_text()
    assert summary.startswith("3 points: 3 ok\nhold: 3 of 3 finished points as the model "
                              "predicted"), summary
    assert f"{summary}report: results/report/index.html" in proc.stdout, proc.stdout
    # The report names every run, loads nothing from elsewhere and draws every chart.
    from tests.report.fixtures import assert_report

    from tcplimits.report.browser import browser_available

    assert_report(wd.path / "results" / "report", runs["run_id"].to_list(),
                  browser=browser_available() is None)
