rule evaluate_model:
    input:
        tokens=run_tokens,
        base=run_base,
        tuned="results/runs/{run}/train/model",
        train_manifest="results/runs/{run}/train.manifest.json",
        env=ENV,
    output:
        report="results/runs/{run}/evaluate/report.json",
        predictions="results/runs/{run}/evaluate/predictions.jsonl",
        summary="results/runs/{run}/evaluate/summary.md",
        manifest="results/runs/{run}/evaluate.manifest.json",
    log:
        "logs/runs/{run}/evaluate_model.log",
    benchmark:
        "benchmarks/runs/{run}/evaluate_model.tsv"
    conda:
        CONDA_ENV
    threads: run_threads
    params:
        spec=run_slice("evaluate_model"),
        tokens=tokens_file,
        method=run_method,
        out_dir="results/runs/{run}/evaluate",
    shell:
        """
        python -m scripts.evaluate_model --spec-json {params.spec:q} --method {params.method:q} \
            --base {input.base:q} --tuned {input.tuned:q} --train-manifest {input.train_manifest:q} \
            --tokens {params.tokens:q} --out-dir {params.out_dir:q} --manifest {output.manifest:q} \
            --run {wildcards.run:q} --threads {threads} --environment {input.env:q} \
            --progress 3 3>&2 >{log:q} 2>&1
        """


rule plot_training:
    input:
        log="results/runs/{run}/train/log.jsonl",
    output:
        plot=report(
            "results/runs/{run}/report/loss.png",
            caption="../report/loss.rst",
            category="{run}",
            subcategory="1 training",
            labels={"run": "{run}", "figure": "loss curves"},
        ),
    log:
        "logs/runs/{run}/plot_training.log",
    conda:
        CONDA_ENV
    shell:
        """
        python -m scripts.plot_training --log {input.log:q} --run {wildcards.run:q} \
            --out {output.plot:q} >{log:q} 2>&1
        """


rule plot_metrics:
    input:
        report="results/runs/{run}/evaluate/report.json",
        benchmarks=run_benchmarks,
    output:
        plot=report(
            "results/runs/{run}/report/metrics.png",
            caption="../report/metrics.rst",
            category="{run}",
            subcategory="2 evaluation",
            labels={"run": "{run}", "figure": "metrics, base against tuned"},
        ),
    log:
        "logs/runs/{run}/plot_metrics.log",
    conda:
        CONDA_ENV
    shell:
        """
        python -m scripts.plot_metrics --report {input.report:q} --benchmarks {input.benchmarks:q} \
            --out {output.plot:q} >{log:q} 2>&1
        """


# One HTML page per Markdown report (the evaluation summary, the model card), so that the
# Snakemake report shows it inline.
rule report_page:
    input:
        markdown=report_page_markdown,
    output:
        page=report(
            "results/runs/{run}/report/{page}.html",
            caption="../report/report_page.rst",
            category="{run}",
            subcategory="2 evaluation and model card",
            labels={"run": "{run}", "figure": "{page}"},
        ),
    log:
        "logs/runs/{run}/report_page/{page}.log",
    conda:
        CONDA_ENV
    shell:
        """
        python -m scripts.report_page --markdown {input.markdown:q} \
            --title "{wildcards.run}: {wildcards.page}" --out {output.page:q} >{log:q} 2>&1
        """


rule compare_runs:
    input:
        reports=all_runs("results/runs/{run}/evaluate/report.json"),
        benchmarks=benchmark_runs("results/runs/{run}/benchmarks.json"),
    output:
        markdown="results/compare/metrics.md",
        json="results/compare/metrics.json",
        page=report(
            "results/compare/metrics.html",
            caption="../report/compare.rst",
            category="0 all runs",
            labels={"table": "runs compared"},
        ),
        plot=report(
            "results/compare/metrics.png",
            caption="../report/compare.rst",
            category="0 all runs",
            labels={"table": "runs compared (PNG)"},
        ),
    log:
        "logs/compare_runs.log",
    conda:
        CONDA_ENV
    params:
        diff=compare_spec_json,
    shell:
        """
        python -m scripts.compare_runs --reports {input.reports:q} --diff-json {params.diff:q} \
            --benchmarks {input.benchmarks:q} \
            --markdown {output.markdown:q} --json {output.json:q} --html {output.page:q} \
            --png {output.plot:q} >{log:q} 2>&1
        """
