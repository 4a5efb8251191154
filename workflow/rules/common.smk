# Parse-time checks and helpers. The config is validated (schema, then the semantic checks
# of tcplimits.grid.points, such as reversed port ranges) before any job is planned, so a
# bad config stops the workflow with the key and value named and no container started.
import os
import re
from pathlib import Path

from snakemake.utils import validate

from tcplimits import grid

validate(config, schema="../schemas/config.schema.yaml")

POINTS = {point.id: point for point in grid.points(config)}

RUNS_DIR = "results/runs"
DATASET_DIR = "results/dataset"
DATASET_FILES = {
    name: f"{DATASET_DIR}/{name}.parquet"
    for name in ("runs", "clients", "server", "series", "churn")
}
REPORT_SOURCE = "report/report.qmd"
# Quarto's options, which the fallback renderer reads too.
REPORT_SETTINGS = "report/_quarto.yml"
REPORT_DIR = "results/report"
# The software every job uses: the `tcplimits` command of the environment Snakemake runs
# in (pip install -e ., or conda env create -f environment.yml). Naming the file documents
# it, and an edited environment.yml reruns the jobs (Snakemake's software-env trigger).
CONDA_ENV = "../../environment.yml"

# Experiments share one Docker engine and the machine's memory: the profile limits them
# with --resources docker_runs=1. Register the same limit here so that one run at a time
# holds without the profile too (--workflow-profile none). A limit given on the command line
# or in a profile wins.
if "docker_runs" not in workflow.global_resources:
    workflow.register_resource("docker_runs", 1)


def point_pattern():
    """Wildcard constraint: exactly the configured point ids."""
    return "|".join(re.escape(point_id) for point_id in POINTS)


def point_flags(wildcards):
    """The `tcplimits run` flags of one point."""
    return POINTS[wildcards.point].flags


def run_json(point_id):
    return f"{RUNS_DIR}/{point_id}/run.json"


def report_settings(wildcards):
    """The report's settings file, when there is one (editing it renders again)."""
    return [REPORT_SETTINGS] if Path(REPORT_SETTINGS).exists() else []


def final_outputs():
    """The dataset, and the report once its source exists (it lands with the report issue)."""
    outputs = list(DATASET_FILES.values())
    if Path(REPORT_SOURCE).exists():
        outputs.append(f"{REPORT_DIR}/index.html")
    return outputs
