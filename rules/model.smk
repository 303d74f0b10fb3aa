rule base_model:
    input:
        unpack(model_parent),
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
        parent=model_parent_args,
    shell:
        """
        python -m scripts.base_model --spec-json {params.spec:q} --records {input.records:q} {params.parent} \
            --out {output.model:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """
