# Publish a result (README): the lock file, its check in a clean copy, and an archive.


rule lock:
    input:
        all_data,  # (a data source deleted after the build is refused here, as for export)
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


# Rebuilds nothing: re-hashes the data sources and the results here against the lock and names
# the first file that is not the locked one (`dvc status` for a tunemake build).
rule verify_local:
    log:
        "logs/verify_local.log",
    conda:
        CONDA_ENV
    params:
        lock=LOCK,
    shell:
        "python -m scripts.verify_local --lock {params.lock:q} 2>&1 | tee {log:q}"


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
