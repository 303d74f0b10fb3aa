"""tunemake: fine-tuning as a reproducible build. One spec per experiment in specs/.

snakemake export      # everything: data, base model, train, evaluate, merged model, smoke test
snakemake evaluate    # stop after evaluation
snakemake data        # stop after tokenization
"""

from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/environment.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"


localrules:
    export,
    evaluate,
    train,
    data,


rule export:
    input:
        all_runs("results/runs/{run}/export"),
        all_runs("results/runs/{run}/smoke_test.json"),


rule evaluate:
    input:
        all_runs("results/runs/{run}/evaluate/report.json"),


rule train:
    input:
        all_runs("results/runs/{run}/train/manifest.json"),


rule data:
    input:
        all_runs("results/runs/{run}/data.done"),
