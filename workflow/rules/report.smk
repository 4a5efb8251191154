# The HTML report, rendered from the dataset by `tcplimits report`.
rule report:
    input:
        dataset=list(DATASET_FILES.values()),
        source=REPORT_SOURCE,
        settings=report_settings,
    output:
        f"{REPORT_DIR}/index.html",
    log:
        "results/logs/report.log",
    conda:
        CONDA_ENV
    params:
        dataset=lambda wildcards, input: os.path.dirname(input.dataset[0]),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "tcplimits report --dataset {params.dataset} --out {params.out} "
        "--source {input.source} > {log} 2>&1"
