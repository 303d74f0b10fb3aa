rule evaluation:
    input:
        tokens=run_tokens,
        base=run_base,
        tuned="results/runs/{run}/train/model",
        train_manifest="results/runs/{run}/train/manifest.json",
        env=ENV,
    output:
        report="results/runs/{run}/evaluate/report.json",
        predictions="results/runs/{run}/evaluate/predictions.jsonl",
        manifest="results/runs/{run}/evaluate/manifest.json",
    log:
        "logs/runs/{run}/evaluate.log",
    benchmark:
        "benchmarks/runs/{run}/evaluate.tsv"
    conda:
        CONDA_ENV
    threads: run_threads
    params:
        spec=run_section("evaluate"),
        method=run_method,
        out_dir="results/runs/{run}/evaluate",
    shell:
        """
        python -m scripts.evaluate --spec-json {params.spec:q} --method {params.method:q} \
            --base {input.base:q} --tuned {input.tuned:q} --train-manifest {input.train_manifest:q} \
            --tokens {input.tokens:q} --out-dir {params.out_dir:q} --run {wildcards.run:q} \
            --threads {threads} --environment {input.env:q} >{log:q} 2>&1
        """
