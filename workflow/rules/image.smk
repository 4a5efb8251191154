# The agent image, built by its own job before the first experiment (so experiments never
# race to build it). The stamp records the tag and image id. It is built once: later
# invocations find the stamp and do not run this job again. Every `tcplimits run` still
# checks that the image of the current agent code exists (the tag is a hash of the
# container programs) and builds it when the code changed, and records the image id it
# ran on in its run.json (env_image_id in the dataset).
rule image:
    output:
        "results/image.txt",
    log:
        "results/logs/image.log",
    conda:
        CONDA_ENV
    shell:
        "tcplimits image --stamp {output} > {log} 2>&1"
