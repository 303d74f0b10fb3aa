rule merge_model:
    input:
        base=run_base,
        tuned="results/runs/{run}/train/model",
        env=ENV,
    output:
        model=directory("results/runs/{run}/merged"),
        manifest="results/runs/{run}/merged.manifest.json",
    log:
        "logs/runs/{run}/merge_model.log",
    conda:
        CONDA_ENV
    params:
        spec=run_export_part("dtype"),
        method=run_method,
    shell:
        """
        python -m scripts.merge_model --spec-json {params.spec:q} --method {params.method:q} \
            --base {input.base:q} --tuned {input.tuned:q} --out {output.model:q} \
            --manifest {output.manifest:q} --environment {input.env:q} >{log:q} 2>&1
        """


rule model_card:
    input:
        merged="results/runs/{run}/merged",
        report="results/runs/{run}/evaluate/report.json",
        train_manifest="results/runs/{run}/train/manifest.json",
        base_manifest=run_base_manifest,
    output:
        folder=directory("results/runs/{run}/export"),
    log:
        "logs/runs/{run}/model_card.log",
    conda:
        CONDA_ENV
    params:
        spec=run_card_json,
        run_spec=run_spec_json,
    shell:
        """
        python -m scripts.model_card --spec-json {params.spec:q} --run {wildcards.run:q} \
            --run-spec {params.run_spec:q} --merged {input.merged:q} --report {input.report:q} \
            --train-manifest {input.train_manifest:q} --base-manifest {input.base_manifest:q} \
            --out {output.folder:q} >{log:q} 2>&1
        """


rule smoke_test:
    input:
        model="results/runs/{run}/export",
        env=ENV,
    output:
        manifest="results/runs/{run}/smoke_test.json",
    log:
        "logs/runs/{run}/smoke_test.log",
    conda:
        CONDA_ENV
    params:
        spec=run_export_part("smoke_prompts", "max_new_tokens"),
    shell:
        """
        python -m scripts.smoke_test --spec-json {params.spec:q} --model {input.model:q} \
            --run {wildcards.run:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """
