# The HTML report, rendered from the dataset by `tcplimits report`: index.html, the dataset
# copied to data/ beside it (CSVs and the data dictionary too), the config the sweep ran with,
# and the browser check's screenshot where Chromium is installed.
rule report:
    input:
        dataset=list(DATASET_FILES.values()),
        source=REPORT_SOURCE,
        settings=REPORT_SETTINGS,
        config=CONFIG_FILE,
    output:
        **report_outputs(),
    log:
        "results/logs/report.log",
    conda:
        CONDA_ENV
    params:
        dataset=lambda wildcards, input: os.path.dirname(input.dataset[0]),
        out=lambda wildcards, output: os.path.dirname(output.page),
        browser_check="yes" if BROWSER_CHECK else "no",
    shell:
        "tcplimits report --dataset {params.dataset} --out {params.out} "
        "--source {input.source} --config-file {input.config} "
        "--browser-check {params.browser_check} > {log} 2>&1"
