"""The workflow run as a user runs it, in a temporary copy of the repository (shared by the
workflow's tests: tests/workflow/test_workflow.py, and test_slurm.py on a cluster).

``Workdir`` puts a fake `tcplimits` first on PATH unless told not to: `run` writes a run
directory like the engine's (clients hold what the model predicts) without Docker, the other
commands write their outputs, and `dataset` is the real one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[2]

FAKE_TCPLIMITS = textwrap.dedent(f"""\
    #!{sys.executable}
    # A stand-in for `tcplimits` in workflow tests: no Docker. See tests/workflow/harness.py.
    import json, os, sys, time
    from pathlib import Path

    from tcplimits import cli, model, results
    from tcplimits.config.params import FIELDS, RunParams

    argv = sys.argv[1:]
    args = cli.build_parser().parse_args(argv)
    calls = os.environ["FAKE_TCPLIMITS_CALLS"]
    if args.command == "run":
        params = RunParams.from_mapping(
            {{n: getattr(args, n) for n in FIELDS if getattr(args, n) is not None}})
        started = time.time()
        time.sleep(float(os.environ.get("FAKE_TCPLIMITS_SLEEP", "0")))
        if params.max_connections == 13:
            sys.exit("fake engine crash")
        out = Path(args.out)
        prediction = model.predict(params, server_nofile=20000, server_workers=1)
        clients = [dict(run_id=args.run_id, client=c, proc=p, held_ports=0,
                        connections=prediction.per_client[c - 1] // params.procs,
                        error=prediction.errno)
                   for c in range(1, params.clients + 1) for p in range(1, params.procs + 1)]
        failed = params.max_connections == 14
        for name, schema in results.SCHEMAS.items():
            rows = clients if name == results.CLIENTS_FILE else []
            results.write_parquet(results.frame(rows, schema), out / name)
        results.write_json(dict(
            run_id=args.run_id, status=results.STATUS_FAILED if failed else results.STATUS_OK,
            reason="fake failure" if failed else None, params=params.to_dict(),
            resolved=dict(server_nofile=20000, server_workers=1),
            prediction=prediction.to_dict(), environment=dict(kernel="fake"),
            totals=dict(connections=sum(c["connections"] for c in clients)),
            held_ports={{str(c): [] for c in range(1, params.clients + 1)}}, facts={{}},
        ), out / results.RUN_JSON)
        with open(calls, "a") as f:
            f.write(json.dumps(dict(run_id=args.run_id, flags=argv, start=started,
                                    end=time.time())) + "\\n")
    elif args.command == "image":
        results.write_text("fake-image\\n", args.stamp)
        with open(calls, "a") as f:
            f.write(json.dumps(dict(image=True, flags=argv)) + "\\n")
    elif args.command == "report":
        from tcplimits.report import downloads, render

        downloads.write_csvs(render.copy_dataset(Path(args.dataset), Path(args.out) / "data"))
        results.write_text("<html></html>", Path(args.out) / "index.html")
        results.write_text(Path(args.config_file).read_text(), Path(args.out) / "config.yaml")
        cli._write_summary(Path(args.dataset), Path(args.out) / results.SUMMARY_FILE)
        if args.browser_check == "yes":
            results.write_text("fake png", Path(args.out) / "screenshot.png")
    else:
        sys.exit(cli.main(argv))
    """)


class Workdir:
    """A copy of the workflow files, and snakemake run in it."""

    def __init__(self, path: Path, fake: bool = True):
        self.path = path
        for name in ("Snakefile", "workflow", "config", "environment.yml", "profiles"):
            src = ROOT / name
            if src.is_symlink():
                os.symlink(os.readlink(src), path / name)
            elif src.is_dir():
                shutil.copytree(src, path / name)
            elif src.exists():
                shutil.copy(src, path / name)
        self.calls = path / "calls.jsonl"
        self.env = dict(os.environ)
        if fake:
            bin_dir = path / "fakebin"
            bin_dir.mkdir()
            (bin_dir / "tcplimits").write_text(FAKE_TCPLIMITS)
            (bin_dir / "tcplimits").chmod(0o755)
            self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env['PATH']}"
            self.env["FAKE_TCPLIMITS_CALLS"] = str(self.calls)

    def snakemake(self, *args: str, check: bool = True, profile: bool = True,
                  timeout: float = 300) -> subprocess.CompletedProcess:
        # The default workflow profile is found on its own (the root symlink `profiles`).
        cmd = ["snakemake", "--cores", "2", *([] if profile else ["--workflow-profile", "none"]),
               *args]
        proc = subprocess.run(cmd, cwd=self.path, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def plan(self, *args: str) -> dict[str, list[str]]:
        """Dry run: rule name -> the first output of each job it would run."""
        out = self.snakemake("-n", *args)
        text = out.stdout + out.stderr
        jobs: dict[str, list[str]] = {}
        rule = None
        for line in text.splitlines():
            m = re.match(r"^(?:local)?rule (\w+):", line)
            if m:
                rule = m.group(1)
                jobs.setdefault(rule, [])
            m = re.match(r"^\s+output: ([^,\s]+)", line)
            if m and rule:
                jobs[rule].append(m.group(1))
                rule = None
        if not jobs:
            assert "Nothing to be done" in text, text
        return jobs

    def planned_points(self, *args: str) -> set[str]:
        return {Path(o).parent.name for o in self.plan(*args).get("experiment", [])}

    def runs(self) -> list[dict]:
        if not self.calls.exists():
            return []
        lines = self.calls.read_text().splitlines()
        return [c for c in map(json.loads, lines) if "run_id" in c]

    def write_config(self, name: str, config: dict) -> str:
        path = self.path / "config" / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return f"config/{name}"


def labelled_containers() -> int | None:
    try:
        import docker

        client = docker.from_env()
        return len(client.containers.list(all=True, sparse=True, filters={"label": "tcplimits"}))
    except Exception:  # no engine here: the refusal is still checked, the count is not
        return None


def engine_ready() -> str | None:
    """Why the end-to-end test cannot run here, or None."""
    if labelled_containers() is None:
        return "no Docker engine"
    try:
        import tcplimits.engine  # noqa: F401
    except ImportError as err:
        return f"engine not importable: {err}"
    return None


def assert_tiny_dataset(ds: Path) -> pl.DataFrame:
    """The dataset of config/tiny.yaml holds the counts its three points must give (also
    checked for the sweep on Slurm, tests/workflow/test_slurm.py); returns the runs table."""
    runs = pl.read_parquet(ds / "runs.parquet")
    clients = pl.read_parquet(ds / "clients.parquet")
    assert runs.height == 3
    assert runs["status"].to_list() == ["ok"] * 3, runs.select("run_id", "reason")
    # the model's prediction is the measurement
    assert runs["connections_total"].to_list() == runs["predicted_total"].to_list()

    by_id = {r["run_id"]: r for r in runs.iter_rows(named=True)}
    ports = by_id["ports40000-40499_nofile15000_clients1_procs1"]
    assert ports["predicted_limit"] == "ports"
    for row in clients.filter(pl.col("run_id") == ports["run_id"]).iter_rows(named=True):
        assert row["connections"] == 500 - row["held_ports"]
        assert row["error"] == "EADDRNOTAVAIL" and row["errno"] == 99

    fds = clients.filter(pl.col("run_id") == "ports40000-44999_nofile300_clients1_procs1")
    assert fds["connections"].to_list() == [300 - 3]
    assert fds["error"].to_list() == ["EMFILE"] and fds["errno"].to_list() == [24]

    two = clients.filter(pl.col("run_id") == "ports40000-40299_nofile15000_clients2_procs1")
    assert two.height == 2 and two["client_ip"].n_unique() == 2
    for row in two.iter_rows(named=True):  # each client gets the whole range: the 4-tuple
        assert row["connections"] == 300 - row["held_ports"]
        assert row["error"] == "EADDRNOTAVAIL"
    return runs
