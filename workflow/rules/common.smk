# Parse-time checks and helpers. The config is validated (schema, then the semantic checks
# of tcplimits.config.grid.points, such as reversed port ranges) before any job is planned, so a
# bad config stops the workflow with the key and value named and no container started.
import os
import re

from snakemake.utils import validate

from tcplimits import results
from tcplimits.config import grid
from tcplimits.image import extra as image_extra
from tcplimits.report import browser, render
from tcplimits.results import dataset

# The project's own check first: a mistake is one line naming the config file, the key (with
# the closest known key) and the value, and exit code 2, as `tcplimits points` says it;
# Snakemake's schema check would print the whole schema.
POINTS = {
    point.id: point
    for point in grid.workflow_points(
        config, workflow.overwrite_configfiles or [DEFAULT_CONFIG]
    )
}
# The schema ships inside the package: the workflow and an installed tcplimits read one file.
validate(config, schema=str(grid.SCHEMA_PATH))

RUNS_DIR = "results/runs"
DATASET_DIR = "results/dataset"
# The dataset's tables, as tcplimits.results.dataset names them.
DATASET_FILES = {name: f"{DATASET_DIR}/{name}.parquet" for name in dataset.TABLE_NAMES}
# The report's source ships with the package (tcplimits.report.render), beside Quarto's
# options, which the fallback renderer reads too.
REPORT_SOURCE = str(render.REPORT_SOURCE)
REPORT_SETTINGS = str(render.QUARTO_SETTINGS)
REPORT_DIR = "results/report"
# The config the sweep runs with (the last --configfile, else the default): the report copies
# it beside the page and gives the command that reruns the sweep with it.
CONFIG_FILE = (
    os.path.relpath(workflow.overwrite_configfiles[-1])
    if workflow.overwrite_configfiles
    else "config/config.yaml"
)
# The report's browser check runs where headless Chromium can be driven (scripts/bootstrap.sh
# --test installs it); only there does the report job write a screenshot.
BROWSER_CHECK = browser.browser_available() is None
# The software of every job: the package's dependencies (workflow/envs/tcplimits.yaml, which
# environment.yml links to) plus this checkout, installed by the post-deploy script beside it.
# Without --sdm conda the jobs run the `tcplimits` of the environment Snakemake runs in;
# an edited environment file still reruns them (Snakemake's software-env trigger).
CONDA_ENV = "../envs/tcplimits.yaml"

# Experiments share one Docker engine and the machine's memory: the profile limits them
# with --resources docker_runs=1. Register the same limit here so that one run at a time
# holds without the profile too (--workflow-profile none). A limit given on the command line
# or in a profile wins.
if "docker_runs" not in workflow.global_resources:
    workflow.register_resource("docker_runs", 1)


def point_pattern():
    """Wildcard constraint: exactly the configured point ids."""
    return "|".join(re.escape(point_id) for point_id in POINTS)


# The images besides the agent image that a point may run on (rule extra_image).
EXTRA_IMAGES = image_extra.EXTRA


def image_stamps(wildcards):
    """The image stamps a point's experiment waits for: the agent image's, and the router's or
    the real servers' where it runs on them. ancient(): a rebuilt image reruns no point.
    """
    names = image_extra.needed([POINTS[wildcards.point].params])
    return [ancient("results/image.txt")] + [
        ancient(f"results/image-{n}.txt") for n in names
    ]


def point_flags(wildcards):
    """The `tcplimits run` flags of one point."""
    return POINTS[wildcards.point].flags


def point_minutes(wildcards):
    """A point's wall time on a batch scheduler (runtime, in minutes)."""
    return POINTS[wildcards.point].job_minutes


def run_files(point_id):
    """The files of a run directory that the dataset reads: run.json and each table."""
    files = {"run_json": results.RUN_JSON}
    files.update((name, file) for name, (file, _) in dataset.TABLES.items())
    return {name: f"{RUNS_DIR}/{point_id}/{file}" for name, file in files.items()}


# `snakemake --report` (Snakemake's provenance report) shows these outputs, each with its
# caption (absolute: Snakemake resolves a relative one against different folders).
REPORT_CATEGORY = "tcplimits"
CAPTIONS = os.path.join(workflow.basedir, "workflow", "report")


def report_outputs():
    """The page, the dataset copied beside it (with CSVs and the data dictionary), the
    sweep's summary, the config it ran with and, with the browser check, its screenshot;
    the page, data and summary marked for `snakemake --report`."""
    outputs = {
        "page": report(
            f"{REPORT_DIR}/index.html",
            caption=f"{CAPTIONS}/page.rst",
            category=REPORT_CATEGORY,
            labels={"output": "the report page"},
        ),
        "data": report(
            directory(f"{REPORT_DIR}/data"),
            patterns=["{name}.csv"],
            caption=f"{CAPTIONS}/data.rst",
            category=REPORT_CATEGORY,
            labels={"output": "table {name}"},
        ),
        "summary": report(
            f"{REPORT_DIR}/{results.SUMMARY_FILE}",
            caption=f"{CAPTIONS}/summary.rst",
            category=REPORT_CATEGORY,
            labels={"output": "the sweep's summary"},
        ),
        "config": f"{REPORT_DIR}/config.yaml",
    }
    if BROWSER_CHECK:
        outputs["screenshot"] = f"{REPORT_DIR}/screenshot.png"
    return outputs


def dataset_outputs():
    """The dataset's Parquet files, marked for `snakemake --report`."""
    return {
        name: report(
            path,
            caption=f"{CAPTIONS}/dataset.rst",
            category=REPORT_CATEGORY,
            subcategory="dataset",
            labels={"output": f"{name}.parquet"},
        )
        for name, path in DATASET_FILES.items()
    }
