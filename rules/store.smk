"""The pull and publish rules of the shared store (docs/store.md; their functions are in
store_params.smk). Included by the Snakefile after the rules whose outputs the pull rules name.
"""


ruleorder: pull_tokens > tokenize_shard
ruleorder: pull_model > base_model
ruleorder: pull_train > train_model
ruleorder: pull_merged > merge_model


rule pull_tokens:
    input:
        pull_tokens_input,
    output:
        tokens=rules.tokenize_shard.output.tokens,
        manifest=rules.tokenize_shard.output.manifest,
    log:
        "logs/tokens/{tkey}/pull_tokens/{shard}.log",
    wildcard_constraints:
        tkey=f"{PULLABLE}[0-9a-f]{{12}}",
    conda:
        CONDA_ENV
    shell:
        "python -m scripts.pull_tokens --tkey {wildcards.tkey} "
        "--shard {wildcards.shard} >{log:q} 2>&1"


rule pull_model:
    input:
        pull_model_input,
    output:
        model=directory(str(rules.base_model.output.model)),
        manifest=rules.base_model.output.manifest,
    log:
        "logs/models/{mkey}/pull_model.log",
    wildcard_constraints:
        mkey=f"{PULLABLE}[0-9a-f]{{12}}",
    conda:
        CONDA_ENV
    shell:
        "python -m scripts.pull_model --mkey {wildcards.mkey} >{log:q} 2>&1"


rule pull_train:
    input:
        pull_train_input,
    output:
        model=directory(str(rules.train_model.output.model)),
        log=rules.train_model.output.log,
        manifest=rules.train_model.output.manifest,
    log:
        "logs/runs/{run}/pull_train.log",
    wildcard_constraints:
        run=f"{PULLABLE}[A-Za-z0-9][A-Za-z0-9._=+-]*",
    conda:
        CONDA_ENV
    params:
        key=lambda wildcards: KEYS[wildcards.run]["train"],
    shell:
        "python -m scripts.pull_train --run {wildcards.run:q} "
        "--key {params.key} >{log:q} 2>&1"


rule pull_merged:
    input:
        pull_merged_input,
    output:
        model=directory(str(rules.merge_model.output.model)),
        manifest=rules.merge_model.output.manifest,
    log:
        "logs/runs/{run}/pull_merged.log",
    wildcard_constraints:
        run=f"{PULLABLE}[A-Za-z0-9][A-Za-z0-9._=+-]*",
    conda:
        CONDA_ENV
    params:
        key=run_merged_key,
    shell:
        "python -m scripts.pull_merged --run {wildcards.run:q} --key {params.key} >{log:q} 2>&1"


# Publishes every keyed artifact of the specs (token shards, base models, trained models) to the
# store: `snakemake publish_store --cores 2 --config store=PATH`. Objects already there are checked.
rule publish_store:
    input:
        publish_store_input,
    log:
        "logs/store/publish_store.log",
    conda:
        CONDA_ENV
    params:
        artifacts=publish_store_list,
    shell:
        "python -m scripts.publish_store --artifacts {params.artifacts:q} "
        "2>&1 | tee {log:q}"
