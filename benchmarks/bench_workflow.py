"""Wall times of the Snakemake sweep: dry run, cold run, no-op rerun, and per-point overhead.

    python benchmarks/bench_workflow.py [--configfile config/config.yaml] [--cores 4]

Runs the workflow for real (Docker) in a fresh copy of the workflow files, so the tree's
own results/ is untouched. "Cold" means no results yet; the agent image is built by the
first job if the engine does not have it (say so when you quote the figure: the output
reports whether the image job built anything). Per point, the engine's own times
(setup, connecting, teardown) are read from the dataset; the rest of a job's wall time is
Snakemake's and the `tcplimits` process start. The dataset and report stages are then
timed alone with --forcerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
COPY = ("Snakefile", "workflow", "config", "environment.yml")


def snakemake(workdir: Path, args: list[str]) -> float:
    """Run snakemake; its wall time in seconds. Fails loudly with the output."""
    cmd = ["snakemake", *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--cores", default="4")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tcplimits-bench-"))
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, workdir / name)
        elif src.exists():
            shutil.copy(src, workdir / name)
    common = ["--cores", args.cores, "--workflow-profile", "workflow/profiles/default",
              "--configfile", args.configfile]
    try:
        dry = snakemake(workdir, ["-n", *common])
        cold = snakemake(workdir, common)
        noop = snakemake(workdir, common)
        # one stage again on the same points (each includes Snakemake's ~1 s start)
        # (targets first: --forcerun takes every word after it)
        dataset_s = snakemake(workdir, ["results/dataset/runs.parquet", *common,
                                        "--forcerun", "dataset"])
        report = workdir / "results" / "report" / "index.html"
        report_s = snakemake(workdir, [*common, "--forcerun", "report"]) \
            if report.exists() else None
        runs = pl.read_parquet(workdir / "results" / "dataset" / "runs.parquet")
        image_log = (workdir / "results" / "logs" / "image.log").read_text()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    points = runs.height
    engine = runs.select(pl.col("duration_s").sum()).item()
    per_point = runs.select(
        "run_id", "status", "duration_s", "setup_s", "connect_s", "teardown_s",
        "connections_total")
    figures = {
        "config": args.configfile,
        "cores": args.cores,
        "points": points,
        "statuses": dict(runs.group_by("status").len().iter_rows()),
        "dry_run_s": round(dry, 2),
        "cold_s": round(cold, 2),
        "noop_s": round(noop, 2),
        "engine_total_s": round(engine, 2),
        "mean_point_s": round(engine / points, 2),
        "mean_setup_s": round(runs["setup_s"].mean(), 2),
        "mean_teardown_s": round(runs["teardown_s"].mean(), 2),
        # what each job costs beyond the engine's own run: Snakemake, process start, image
        # check (with one experiment at a time, jobs do not overlap)
        "workflow_overhead_per_point_s": round((cold - engine) / points, 2),
        "dataset_job_s": round(dataset_s, 2),
        "report_job_s": round(report_s, 2) if report_s is not None else None,
        # `tcplimits image` prints only the tag when the image was there already
        "image_built": len(image_log.splitlines()) > 1,
    }
    with pl.Config(tbl_rows=100, tbl_width_chars=160, fmt_str_lengths=70):
        print(per_point)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if args.keep:
        print(f"work directory: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
