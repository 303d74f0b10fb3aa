# Experiment trackers: a runtime choice, never a spec key. `--config trackers=tensorboard,mlflow,wandb`
# (or `trackers:` in a profile's config) adds one track_run job per run and tracker to the export
# target; it logs post hoc what the build wrote (scripts/tracking/), so switching a
# tracker on or off reruns no other step. A local rule: an online tracker needs the network, which
# the submitting host has and compute nodes may lack.
from scripts.compiler.tracker_choice import TRACKERS as TRACKER_NAMES


wildcard_constraints:
    tracker="|".join(TRACKER_NAMES),


rule track_run:
    input:
        log="results/runs/{run}/train/log.jsonl",
        report="results/runs/{run}/evaluate/report.json",
        summary="results/runs/{run}/evaluate/summary.md",
        card="results/runs/{run}/model_card.md",
        loss="results/runs/{run}/report/loss.png",
        metrics="results/runs/{run}/report/metrics.png",
        benchmarks=run_benchmarks,
        env=ENV,
    output:
        manifest="results/runs/{run}/track/{tracker}.manifest.json",
    log:
        "logs/runs/{run}/track_run/{tracker}.log",
    conda:
        CONDA_ENV
    params:
        spec=run_spec_json,
        content_keys=run_keys_json,
        spec_file=run_spec_file,
        out="results/runs/{run}/track/{tracker}",
    shell:
        """
        python -m scripts.track_run --tracker {wildcards.tracker:q} --run {wildcards.run:q} \
            --spec-json {params.spec:q} --keys-json {params.content_keys:q} --spec-file {params.spec_file:q} \
            --log {input.log:q} --report {input.report:q} --benchmarks {input.benchmarks:q} \
            --out {params.out:q} \
            --artifacts {input.report:q} {input.summary:q} {input.card:q} {input.loss:q} {input.metrics:q} \
            --manifest {output.manifest:q} --environment {input.env:q} >{log:q} 2>&1
        """
