# One job per point. The point's flags reach the job through params, so a changed
# parameter (timeout included) reruns exactly the points it touches.
# The image stamps order the experiments after the image jobs (the agent image's, and the
# router's or the servers' for the points that run on them). They are ancient(): touching or
# rewriting it does not rerun finished points. A new agent image (changed agent code) does
# not rerun them either: each run.json records the image it ran on, and the new image is
# used by the points that run next. To redo every point on a new image, run
# `snakemake --forcerun image` (a rerun of the image job reruns everything after it).
# --exit-zero: a failed or unsupported point is recorded in its run.json with the reason
# (and empty tables) and does not stop the others; the engine or the disk failing the run
# (exit 4) fails the job, and keep-going (the profile) lets the other points finish.
# Outputs: every file the dataset rule reads.
rule experiment:
    input:
        images=image_stamps,
    output:
        **run_files("{point}"),
    log:
        "results/logs/experiment/{point}.log",
    wildcard_constraints:
        point=point_pattern(),
    conda:
        CONDA_ENV
    # On a cluster (workflow/profiles/slurm) each job also gets a node to itself; its wall
    # time follows the point's timeout.
    resources:
        docker_runs=1,
        runtime=point_minutes,
    params:
        flags=point_flags,
        out=lambda wildcards, output: os.path.dirname(output.run_json),
    # A rerun replaces the whole run directory (--force): files of an earlier run of the
    # point must not reach the dataset.
    shell:
        "tcplimits run {params.flags} --run-id {wildcards.point} --out {params.out} "
        "--force --exit-zero > {log} 2>&1"
