# Publish a result (README): the lock file, its check in a clean copy, and an archive.


rule lock:
    input:
        environment=ENV,
        runs=all_runs("results/runs/{run}/smoke_test.manifest.json"),
        exports=all_runs("results/runs/{run}/export.manifest.json"),
    output:
        LOCK,
    log:
        "logs/lock.log",
    conda:
        CONDA_ENV
    params:
        specs=SPEC_FILES,
    shell:
        "python -m scripts.lock --specs {params.specs:q} --environment {input.environment:q} --out {output:q} > {log:q} 2>&1"


# No input or output: it always runs, and never rebuilds the lock it checks (an unpacked
# archive has the lock but no results/). The rebuild uses every CPU (scripts/verify.py).
rule verify:
    log:
        "logs/verify.log",
    conda:
        CONDA_ENV
    params:
        lock=LOCK,
        until=config.get("verify_until", "smoke_test"),
        keep="--keep" if config.get("verify_keep") else "",
    shell:
        "python -m scripts.verify --lock {params.lock:q} --until {params.until:q} {params.keep} "
        "2>&1 | tee {log:q}"


rule archive:
    input:
        LOCK,
    output:
        "tunemake-archive.tar.gz",
    log:
        "logs/archive.log",
    conda:
        CONDA_ENV
    shell:
        "python -m scripts.archive --lock {input:q} --out {output:q} > {log:q} 2>&1"
