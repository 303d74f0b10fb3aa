checkpoint shard_data:
    input:
        sources=data_sources,
        env=ENV,
    output:
        manifest="results/data/{dkey}/raw.manifest.json",
        sample="results/data/{dkey}/tokenizer_sample.jsonl",
    log:
        "logs/data/{dkey}/shard_data.log",
    benchmark:
        "benchmarks/data/{dkey}/shard_data.tsv"
    conda:
        CONDA_ENV
    threads: 2
    params:
        spec=data_json,
        hub=hub_json,
        shard_dir="results/data/{dkey}/raw",
        cache_dir="results/data/{dkey}/cache",
    shell:
        """
        python -m scripts.shard_data --spec-json {params.spec:q} --hub-json {params.hub:q} \
            --shard-dir {params.shard_dir:q} --manifest {output.manifest:q} \
            --tokenizer-sample {output.sample:q} \
            --cache-dir {params.cache_dir:q} --workers {threads} \
            --environment {input.env:q} >{log:q} 2>&1
        """


rule tokenize_shard:
    input:
        unpack(tokenize_inputs),
        env=ENV,
    output:
        tokens="results/tokens/{tkey}/{shard}.parquet",
        manifest="results/tokens/{tkey}/{shard}.manifest.json",
    log:
        "logs/tokens/{tkey}/tokenize_shard/{shard}.log",
    benchmark:
        "benchmarks/tokens/{tkey}/tokenize_shard/{shard}.tsv"
    conda:
        CONDA_ENV
    params:
        spec=tokenize_json,
        data=tokenize_data_json,
        previous=tokenize_previous,
    shell:
        """
        python -m scripts.tokenize_shard --spec-json {params.spec:q} --data-json {params.data:q} \
            --input {input.records:q} \
            --tokenizer {input.model:q} --out {output.tokens:q} --manifest {output.manifest:q} \
            --previous {params.previous:q} --environment {input.env:q} >{log:q} 2>&1
        """


# Checks every tokenized example before training (labels, EOS at turn ends, lengths) and
# renders a few with their masked spans marked; `snakemake data` and `export` include it.
# Keyed like the token shards it reads (plus tokenize.audit): a sweep audits them once.
rule audit_data:
    input:
        tokens=audit_tokens,
        model=audit_model,
        env=ENV,
    output:
        manifest="results/audit/{akey}.manifest.json",
        examples="results/audit/{akey}/examples.txt",
    log:
        "logs/audit/{akey}/audit_data.log",
    priority: 10
    conda:
        CONDA_ENV
    params:
        spec=audit_json,
        tokens=tokens_file,
    shell:
        """
        python -m scripts.audit_data --spec-json {params.spec:q} --tokens {params.tokens:q} \
            --tokenizer {input.model:q} --manifest {output.manifest:q} \
            --examples {output.examples:q} --environment {input.env:q} >{log:q} 2>&1
        """
