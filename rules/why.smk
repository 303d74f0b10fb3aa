rule why:
    log:
        "logs/why.log",
    conda:
        CONDA_ENV
    params:
        specs=SPEC_FILES,
    shell:
        "python -m scripts.why --specs {params.specs:q} 2>&1 | tee {log:q}"
