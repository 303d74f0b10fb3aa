rule train_model:
    input:
        tokens=run_tokens,
        base=run_base,
        env=ENV,
    output:
        model=directory("results/runs/{run}/train/model"),
        log="results/runs/{run}/train/log.jsonl",
        manifest="results/runs/{run}/train/manifest.json",
    log:
        "logs/runs/{run}/train.log",
    benchmark:
        "benchmarks/runs/{run}/train.tsv"
    conda:
        CONDA_ENV
    threads: run_threads
    params:
        spec=run_section("train"),
        work_dir=run_work_dir,
    shell:
        """
        python -m scripts.train --spec-json {params.spec:q} --base {input.base:q} \
            --tokens {input.tokens:q} --work-dir {params.work_dir:q} --out {output.model:q} \
            --log {output.log:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """
