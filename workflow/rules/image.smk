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


# The images some points need besides (tcplimits.image.extra): the NAT router's for nat
# gateway, the real servers' for nginx, nginx-proxy and redis. Each is a job of its own that
# only the points needing it wait for (image_stamps), so that no timed run builds one: a
# config that gains its first such point builds the image, then runs the point, in the same
# invocation. (Not params on the image job: a rerun job masks the jobs after it, and their
# ancient() input then keeps Snakemake from running even the new point.)
rule extra_image:
    input:
        ancient("results/image.txt"),
    output:
        "results/image-{image}.txt",
    log:
        "results/logs/image-{image}.log",
    wildcard_constraints:
        image="|".join(EXTRA_IMAGES),
    conda:
        CONDA_ENV
    shell:
        "tcplimits image --{wildcards.image} --stamp {output} > {log} 2>&1"
