"""tunemake: fine-tuning as a reproducible build. One spec per experiment in specs/.
Each target runs with --cores (e.g. `snakemake export --cores 2`; a dry run, -n, needs none):

snakemake export      # everything: data, base model, train, evaluate, merged model, smoke test
snakemake evaluate    # stop after evaluation (and the lm-eval benchmarks the specs ask for)
snakemake data        # stop after tokenization
snakemake compare     # every run's metrics side by side, loss and metric plots
snakemake && snakemake --report report.html   # all of the above, then the HTML report
snakemake lock        # tunemake.lock: the sha256 of every step's outputs (after export)
snakemake verify      # rebuild in a clean copy and compare with tunemake.lock
snakemake verify_local   # re-hash the results here against tunemake.lock (rebuilds nothing)
snakemake archive     # tunemake-archive.tar.gz: code, specs, data, lock, pins
snakemake publish_store --config store=PATH   # keyed artifacts to a shared store (docs/store.md)
"""

from snakemake.utils import min_version

min_version("9.0")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/run_registry.smk"
include: "rules/keyed_params.smk"
include: "rules/store_params.smk"
include: "rules/environment.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/train.smk"
include: "rules/benchmark_targets.smk"
include: "rules/benchmark.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
include: "rules/track.smk"
include: "rules/why.smk"
include: "rules/publish.smk"
include: "rules/store.smk"


localrules:
    all,
    compare,
    compare_runs,
    plot_training,
    plot_metrics,
    report_page,
    push_to_hub,
    track_run,
    why,
    lock,
    verify,
    verify_local,
    archive,
    pull_tokens,
    pull_model,
    pull_train,
    pull_merged,
    publish_store,
    export,
    evaluate,
    train,
    data,


# Each of these targets asks for every run's data (all_data: through the shard_data checkpoint) itself,
# so that a data source deleted after a full build is refused (data_sources) instead of
# "Nothing to be done": Snakemake looks at shard_data's inputs only from a target this close.
rule export:
    input:
        all_data,
        all_runs("results/runs/{run}/export"),
        all_runs("results/runs/{run}/smoke_test.manifest.json"),
        pushed_runs("results/runs/{run}/push_to_hub.manifest.json"),
        tracked_runs(),


rule evaluate:
    input:
        all_data,
        all_runs("results/runs/{run}/evaluate/report.json"),
        benchmark_runs("results/runs/{run}/benchmarks.json"),


rule train:
    input:
        all_data,
        all_runs("results/runs/{run}/train.manifest.json"),


rule data:
    input:
        all_data,


rule compare:
    input:
        "results/compare/metrics.md",
        "results/compare/metrics.png",
        "results/compare/metrics.html",
        all_runs("results/runs/{run}/report/loss.png"),
        all_runs("results/runs/{run}/report/metrics.png"),
        all_runs("results/runs/{run}/report/evaluation.html"),
        benchmark_runs("results/runs/{run}/report/benchmarks.html"),


# The default target (`snakemake`, `snakemake --report report.html`): export, compare, model cards.
rule all:
    default_target: True
    input:
        rules.export.input,
        rules.compare.input,
        all_runs("results/runs/{run}/report/model_card.html"),


# A run that starts jobs registers itself until it ends (see live_runs in rules/run_registry.smk).
onstart:
    register_run()


onsuccess:
    release_run()
    push_after_build()


onerror:
    release_run()
