# lm-evaluation-harness benchmarks (evaluate.benchmarks): one score per model and task, shared by
# the runs whose model and task are the same (rules/benchmark_targets.smk), then each run's
# table of base against tuned.


rule score_benchmark:
    input:
        model=benchmark_model,
        task=benchmark_task_files,
        env=ENV,
    output:
        scores="results/benchmarks/{bkey}/scores.json",
        manifest="results/benchmarks/{bkey}/scores.manifest.json",
    log:
        "logs/score_benchmark/{bkey}.log",
    conda:
        CONDA_ENV
    threads: benchmark_threads
    params:
        spec=benchmark_json,
    shell:
        """
        python -m scripts.score_benchmark --spec-json {params.spec:q} --model {input.model:q} \
            --out {output.scores:q} --manifest {output.manifest:q} --threads {threads} \
            --environment {input.env:q} >{log:q} 2>&1
        """


rule compare_benchmarks:
    input:
        scores=run_benchmark_scores,
        env=ENV,
    output:
        json="results/runs/{run}/benchmarks.json",
        markdown="results/runs/{run}/benchmarks.md",
        manifest="results/runs/{run}/benchmarks.manifest.json",
    log:
        "logs/runs/{run}/compare_benchmarks.log",
    conda:
        CONDA_ENV
    params:
        spec=run_slice("compare_benchmarks"),
        pairs=run_benchmark_pairs,
    shell:
        """
        python -m scripts.compare_benchmarks --run {wildcards.run:q} --spec-json {params.spec:q} \
            --pairs-json {params.pairs:q} --out {output.json:q} --markdown {output.markdown:q} \
            --manifest {output.manifest:q} --environment {input.env:q} >{log:q} 2>&1
        """
