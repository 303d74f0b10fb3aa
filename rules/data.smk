checkpoint shard_data:
    input:
        sources=data_sources,
        env=ENV,
    output:
        manifest="results/data/{dkey}/shards.json",
    log:
        "logs/data/{dkey}/shard_data.log",
    benchmark:
        "benchmarks/data/{dkey}/shard_data.tsv"
    conda:
        CONDA_ENV
    threads: 2
    params:
        spec=data_json,
        shard_dir="results/data/{dkey}/raw",
        cache_dir="results/data/{dkey}/cache",
    shell:
        """
        python -m scripts.shard_data --spec-json {params.spec:q} \
            --shard-dir {params.shard_dir:q} --manifest {output.manifest:q} \
            --cache-dir {params.cache_dir:q} --workers {threads} \
            --environment {input.env:q} >{log:q} 2>&1
        """


rule clean_shard:
    input:
        shard="results/data/{dkey}/raw/{shard}.jsonl",
        env=ENV,
    output:
        records="results/data/{dkey}/clean/{shard}.jsonl",
        manifest="results/data/{dkey}/clean/{shard}.manifest.json",
    log:
        "logs/data/{dkey}/clean_shard/{shard}.log",
    benchmark:
        "benchmarks/data/{dkey}/clean_shard/{shard}.tsv"
    conda:
        CONDA_ENV
    params:
        spec=data_json,
    shell:
        """
        python -m scripts.clean_shard --spec-json {params.spec:q} --input {input.shard:q} \
            --out {output.records:q} --manifest {output.manifest:q} \
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
        "logs/tokens/{tkey}/{shard}.log",
    benchmark:
        "benchmarks/tokens/{tkey}/{shard}.tsv"
    conda:
        CONDA_ENV
    params:
        spec=tokenize_json,
    shell:
        """
        python -m scripts.tokenize_shard --spec-json {params.spec:q} --input {input.records:q} \
            --tokenizer {input.model:q} --out {output.tokens:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """


# Checks every tokenized example before training (labels, EOS at turn ends, lengths) and
# renders a few with their masked spans marked; `snakemake data` and `export` include it.
rule audit_data:
    input:
        tokens=run_tokens,
        model=run_base,
        env=ENV,
    output:
        report="results/runs/{run}/audit/audit.json",
        examples="results/runs/{run}/audit/examples.txt",
    log:
        "logs/runs/{run}/audit_data.log",
    priority: 10
    conda:
        CONDA_ENV
    params:
        spec=run_section("tokenize"),
    shell:
        """
        python -m scripts.audit_data --spec-json {params.spec:q} --tokens {input.tokens:q} \
            --tokenizer {input.model:q} --report {output.report:q} \
            --examples {output.examples:q} --environment {input.env:q} >{log:q} 2>&1
        """


rule data_ready:
    input:
        run_tokens,
        audit="results/runs/{run}/audit/audit.json",
    output:
        touch("results/runs/{run}/data.done"),
    log:
        "logs/runs/{run}/data_ready.log",
    conda:
        CONDA_ENV
    shell:
        "echo {input:q} > {log:q}"
