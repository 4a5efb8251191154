# All points of the config, concatenated: runs, clients, server and series tables with the
# parameters as columns. Adding or removing a point changes the input set and rebuilds it.
rule dataset:
    input:
        runs=[run_files(point_id)["run_json"] for point_id in POINTS],
        tables=[
            path
            for point_id in POINTS
            for name, path in run_files(point_id).items()
            if name != "run_json"
        ],
    output:
        **dataset_outputs(),
    log:
        "results/logs/dataset.log",
    conda:
        CONDA_ENV
    params:
        run_dirs=lambda wildcards, input: [os.path.dirname(f) for f in input.runs],
        out=lambda wildcards, output: os.path.dirname(output.runs),
    shell:
        "tcplimits dataset {params.run_dirs} --out {params.out} > {log} 2>&1"
