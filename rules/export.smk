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
        spec=run_slice("merge_model"),
        method=run_method,
    shell:
        """
        python -m scripts.merge_model --spec-json {params.spec:q} --method {params.method:q} \
            --base {input.base:q} --tuned {input.tuned:q} --out {output.model:q} \
            --manifest {output.manifest:q} --environment {input.env:q} >{log:q} 2>&1
        """


rule export_adapter:
    input:
        base=run_base,
        tuned="results/runs/{run}/train/model",
        env=ENV,
    output:
        adapter=directory("results/runs/{run}/adapter"),
        manifest="results/runs/{run}/adapter.manifest.json",
    log:
        "logs/runs/{run}/export_adapter.log",
    conda:
        CONDA_ENV
    params:
        spec=run_slice("export_adapter"),
        method=run_method,
    shell:
        """
        python -m scripts.export_adapter --spec-json {params.spec:q} --method {params.method:q} \
            --base {input.base:q} --tuned {input.tuned:q} --out {output.adapter:q} \
            --manifest {output.manifest:q} --run {wildcards.run:q} --environment {input.env:q} \
            >{log:q} 2>&1
        """


rule export_gguf:
    input:
        merged="results/runs/{run}/merged",
        tokens=run_tokens,
        env=ENV,
    output:
        folder=directory("results/runs/{run}/gguf"),
        manifest="results/runs/{run}/gguf.manifest.json",
    log:
        "logs/runs/{run}/export_gguf.log",
    benchmark:
        "benchmarks/runs/{run}/export_gguf.tsv"
    conda:
        CONDA_ENV
    threads: run_threads
    params:
        spec=run_slice("export_gguf"),
        tokens=tokens_file,
    shell:
        """
        python -m scripts.export_gguf --spec-json {params.spec:q} --merged {input.merged:q} \
            --tokens {params.tokens:q} --out {output.folder:q} --manifest {output.manifest:q} \
            --run {wildcards.run:q} --threads {threads} --environment {input.env:q} >{log:q} 2>&1
        """


rule model_card:
    input:
        report="results/runs/{run}/evaluate/report.json",
        train_manifest="results/runs/{run}/train.manifest.json",
        base_manifest=run_base_manifest,
        data_manifest=run_data_manifest,
        gguf=run_gguf_manifest,
        benchmarks=run_benchmarks,
        env=ENV,
    output:
        card="results/runs/{run}/model_card.md",
        manifest="results/runs/{run}/model_card.manifest.json",
    log:
        "logs/runs/{run}/model_card.log",
    conda:
        CONDA_ENV
    params:
        spec=run_slice("model_card"),
        run_spec=run_spec_json,
    shell:
        """
        python -m scripts.model_card --spec-json {params.spec:q} --run {wildcards.run:q} \
            --run-spec {params.run_spec:q} --report {input.report:q} \
            --train-manifest {input.train_manifest:q} --base-manifest {input.base_manifest:q} \
            --data-manifest {input.data_manifest:q} --gguf-manifest {input.gguf:q} \
            --benchmarks {input.benchmarks:q} --out {output.card:q} \
            --manifest {output.manifest:q} --environment {input.env:q} >{log:q} 2>&1
        """


rule export_model:
    input:
        pieces=run_export_pieces,
        card="results/runs/{run}/model_card.md",
        env=ENV,
    output:
        folder=directory("results/runs/{run}/export"),
        manifest="results/runs/{run}/export.manifest.json",
    log:
        "logs/runs/{run}/export_model.log",
    conda:
        CONDA_ENV
    params:
        spec=run_slice("export_model"),
    shell:
        """
        python -m scripts.export_model --spec-json {params.spec:q} --run {wildcards.run:q} \
            --pieces {input.pieces:q} --card {input.card:q} --out {output.folder:q} \
            --manifest {output.manifest:q} --environment {input.env:q} >{log:q} 2>&1
        """


rule smoke_test:
    input:
        model="results/runs/{run}/export",
        env=ENV,
    output:
        manifest="results/runs/{run}/smoke_test.manifest.json",
    log:
        "logs/runs/{run}/smoke_test.log",
    conda:
        CONDA_ENV
    params:
        spec=run_slice("smoke_test"),
    shell:
        """
        python -m scripts.smoke_test --spec-json {params.spec:q} --model {input.model:q} \
            --run {wildcards.run:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """


rule push_to_hub:
    input:
        folder="results/runs/{run}/export",
        smoke_test="results/runs/{run}/smoke_test.manifest.json",
        env=ENV,
    output:
        manifest="results/runs/{run}/push_to_hub.manifest.json",
    log:
        "logs/runs/{run}/push_to_hub.log",
    conda:
        CONDA_ENV
    params:
        spec=run_slice("push_to_hub"),
    shell:
        """
        python -m scripts.push_to_hub --spec-json {params.spec:q} --folder {input.folder:q} \
            --smoke-test {input.smoke_test:q} --manifest {output.manifest:q} \
            --run {wildcards.run:q} --environment {input.env:q} >{log:q} 2>&1
        """
