# The sweep: run a grid of experiments on the Docker engine, gather them into one Parquet
# dataset, render the report.
#   snakemake --cores 4                                    config/config.yaml
#   snakemake --cores 4 --configfile config/seed.yaml      the seed itself
#   snakemake -n                                           the plan, nothing run
# Defaults (keep-going, one experiment at a time) are in workflow/profiles/default, which
# Snakemake finds through the symlink profiles -> workflow/profiles (it looks for
# profiles/default beside this Snakefile). Stages: workflow/rules/*.smk; the work is done by
# the `tcplimits` command (src/tcplimits).
from snakemake.utils import min_version

from tcplimits.config import grid

min_version("9.0")

DEFAULT_CONFIG = "config/config.yaml"


# A --configfile replaces the default config (Snakemake would otherwise merge it into
# config/config.yaml), so that a file's grid is exactly the points it runs; --config KEY=VALUE
# still overrides single keys of whichever file is in use. A --configfile is read by
# Snakemake before this file runs (a mistake there is said by the profiles' logger plugin,
# src/snakemake_logger_plugin_tcplimits); the default one is checked here first, so that a
# YAML error in it is one line with its line and column.
if not workflow.overwrite_configfiles:
    grid.check_config_file(DEFAULT_CONFIG)

    configfile: DEFAULT_CONFIG


include: "workflow/rules/common.smk"
include: "workflow/rules/image.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/report.smk"


# On a cluster (workflow/profiles/slurm) the dataset and the report are made where Snakemake
# runs: they only read and write results/ and would otherwise wait in the queue. The image
# and the experiments run on the nodes, where the Docker engine under test is.
localrules:
    dataset,
    report,


# The sweep's summary (points, the model's verdicts, noisy and failed points with their
# reasons), which the report job wrote beside the page, and where the page is.
onsuccess:
    summary = report_outputs()["summary"]
    if os.path.exists(summary):
        with open(summary) as text:
            print(f"\n{text.read()}report: {report_outputs()['page']}")


rule all:
    default_target: True
    input:
        DATASET_FILES.values(),
        report_outputs()["page"],
