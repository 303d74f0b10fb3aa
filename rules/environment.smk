rule environment:
    output:
        ENV,
    log:
        "logs/environment.log",
    conda:
        CONDA_ENV
    shell:
        "python -m scripts.environment --out {output:q} > {log:q} 2>&1"
