rule base_model:
    input:
        records=model_records,
        env=ENV,
    output:
        model=directory("results/models/{mkey}/model"),
        manifest="results/models/{mkey}/model.manifest.json",
    log:
        "logs/models/{mkey}/base_model.log",
    benchmark:
        "benchmarks/models/{mkey}/base_model.tsv"
    conda:
        CONDA_ENV
    params:
        spec=model_json,
    shell:
        """
        python -m scripts.base_model --spec-json {params.spec:q} --records {input.records:q} \
            --out {output.model:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """
