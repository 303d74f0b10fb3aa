"""Write the model card: Markdown with hub metadata (YAML front matter), the metrics, how to
load the model, the training summary and the provenance. export_model puts it in the export
folder as README.md; changing the card text never re-merges.

    python -m scripts.model_card --spec-json '{"card": {...}, "format": "merged"}' --run demo \
        --run-spec "$(cat spec.json)" --report results/runs/demo/evaluate/report.json \
        --train-manifest ... --base-manifest ... --data-manifest results/data/KEY/raw.manifest.json \
        --out results/runs/demo/model_card.md --manifest results/runs/demo/model_card.manifest.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from scripts.common.cli import json_arg
from scripts.common.files import atomic_write_text, read_json
from scripts.common.manifest import write_manifest
from scripts.common.report_text import benchmark_table, preference_markdown, run_locally_markdown


def benchmark_results(benchmarks: dict | None) -> list:
    """The tuned model's harness scores as model-index results (one per task and metric)."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=row["task"],
            dataset_name=row["name"],
            metric_type=row["metric"],
            metric_name=f"{row['metric']} (lm-evaluation-harness {benchmarks['harness']})",
            metric_value=row["tuned"],
        )
        for row in (benchmarks or {}).get("rows", [])
    ]


def card_metadata(
    card: dict,
    fmt: str,
    run: str,
    spec: dict,
    report: dict,
    train: dict,
    base: dict,
    benchmarks: dict | None = None,
) -> str:
    """The YAML front matter the hub reads (built with huggingface_hub, so it validates there):
    the validation metrics and the harness benchmarks as model-index results."""
    from huggingface_hub import EvalResult, ModelCardData

    datasets = card["datasets"] or [
        s["hub"]["repo"] if "hub" in s else s["path"] for s in spec["data"]["sources"]
    ]
    method = train["details"]["method"]
    results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=datasets[0],
            dataset_name=f"{run} validation split",
            dataset_split="validation",
            metric_type=name,
            metric_value=value,
        )
        for name, value in report["metrics"]["tuned"].items()
    ] + benchmark_results(benchmarks)
    adapter_tags = ["peft", "lora"] if fmt != "merged" else []
    return ModelCardData(
        base_model=base["details"]["weights"] if base["details"]["source"] == "id" else None,
        library_name="peft" if fmt == "adapter" else "transformers",
        license=card["license"],
        language=card["language"],
        datasets=datasets,
        metrics=list(spec["evaluate"]["metrics"]),
        pipeline_tag="text-generation",
        tags=["tunemake", train["spec"]["objective"], method, *adapter_tags, *card["tags"]],
        model_name=run,
        eval_results=results,
    ).to_yaml()


def metrics_table(report: dict) -> str:
    base, tuned = report["metrics"]["base"] or {}, report["metrics"]["tuned"]
    lines = ["| metric | base | tuned |", "|---|---|---|"]
    for name, value in tuned.items():
        before = f"{base[name]:.4g}" if name in base else "-"
        lines.append(f"| {name} | {before} | {value:.4g} |")
    return "\n".join(lines)


def usage(fmt: str, base: dict) -> str:
    """How to load the export: plain transformers for the merged model, PEFT for the adapter."""
    merged = (
        "```python\nfrom transformers import pipeline\n"
        'generate = pipeline("text-generation", model="PATH_OR_REPO")\n```'
    )
    where = "" if fmt == "adapter" else ', subfolder="adapter"'
    built_here = base["details"]["source"] in ("build", "from_run")  # a folder of this workflow
    base_ref = "BASE_FOLDER" if built_here else base["details"]["weights"]
    adapter = (
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base_ref}")\n'
        f'model = PeftModel.from_pretrained(base, "PATH_OR_REPO"{where})\n```'
    )
    parts = {"merged": [merged], "adapter": [adapter], "both": [merged, adapter]}[fmt]
    return "\n\n".join(parts)


def training_summary(train: dict) -> str:
    spec, counts, details = train["spec"], train["counts"], train["details"]
    objective = spec["objective"]
    beta = (spec.get(objective) or {}).get("beta") if objective != "sft" else None
    lines = [
        f"- objective: {objective}" + (f", beta {beta:g}" if beta is not None else ""),
        f"- method: {details['method']}, precision: {details['precision']}",
        f"- steps: {counts['steps']}, examples: {counts['examples']}, tokens: {counts['train_tokens']}",
        f"- learning rate: {spec['learning_rate']}, batch per device: {spec['per_device_batch_size']}",
        f"- loss: {details['first_loss']:.4f} -> {details['final_loss']:.4f}",
        f"- trainable parameters: {counts['trainable_parameters']} of {counts['total_parameters']}",
    ]
    if details["method"] != "full":
        lora = spec["lora"]
        lines.append(f"- LoRA: r {lora['r']}, alpha {lora['alpha']}, modules {lora['target_modules']}")
    return "\n".join(lines)


def provenance(train: dict, base: dict, data: dict) -> str:
    prov = train["provenance"]
    sources = "".join(f"\n  - {i['path']}: sha256 {i['sha256']}" for i in data["inputs"])
    source, weights = base["details"]["source"], base["details"]["weights"]
    described = {
        "build": "built from the spec's model.build section (random initialisation)",
        "id": f"hub id {weights}",
        "path": f"local folder {weights}",
        "from_run": "the tuned model of run {run} ({method} training, merged onto its base): "
        "model.from_run".format(**base["details"].get("parent_run", {"run": "?", "method": "?"})),
    }[source]
    return f"""- base model: {described}
- data sources:{sources}
- tokenized shards (sha256): {", ".join(i["sha256"][:12] for i in train["inputs"] if i["path"].endswith(".parquet"))}
- trained weights: {weights_line(train)}
- packages: {", ".join(f"{k} {v}" for k, v in sorted(prov["packages"].items()))}
- device: {prov["device"]}, python: {prov["python"]}, git commit: {prov["git_commit"]}"""


def weights_line(train: dict) -> str:
    files = [o for o in train.get("outputs", []) if o["path"].endswith(".safetensors")]
    return ", ".join(f"{Path(o['path']).name} sha256 {o['sha256']}" for o in files)


def render_card(
    export: dict,
    run: str,
    spec: dict,
    report: dict,
    train: dict,
    base: dict,
    data: dict,
    gguf: dict | None = None,
    benchmarks: dict | None = None,
) -> str:
    """The README.md text: YAML metadata, summary, usage (and running the GGUF files locally),
    evaluation, training, spec, provenance."""
    card, fmt = export["card"], export["format"]
    local = f"\n\n## Run it locally\n\n{run_locally_markdown(run, gguf)}" if gguf else ""
    meta = card_metadata(card, fmt, run, spec, report, train, base, benchmarks)
    return f"""---
{meta.strip()}
---

# {run}

{card["summary"] or "Fine-tuned with tunemake."}

## Use

{usage(fmt, base)}{local}

## Evaluation ({report["examples"]} validation examples, base against tuned)

{metrics_table(report)}{preference_markdown(report)}{benchmarks_markdown(benchmarks)}

## Training

{training_summary(train)}

## Spec

```yaml
{yaml.safe_dump(spec, sort_keys=False).strip()}
```

## Provenance

{provenance(train, base, data)}

To check these bytes: `snakemake lock --cores 1` writes `tunemake.lock` (the sha256 of every file
every step wrote, with the package versions, device, threads and seeds), and
`snakemake verify --cores 2` rebuilds the run in a clean copy and compares every file with it
(docs/publish.md).
"""


def benchmarks_markdown(benchmarks: dict | None) -> str:
    if not benchmarks:
        return ""
    table = benchmark_table(benchmarks).split("\n", 2)[2]  # without its title
    return f"\n\n### Benchmarks (lm-evaluation-harness {benchmarks['harness']}, base against tuned)\n\n{table.strip()}"


def optional_json(paths: list[str]) -> dict | None:
    """The one file of an optional input (the GGUF manifest, the benchmark table), or None."""
    paths = [p for p in paths if p]  # Snakemake quotes an empty input list as ''
    return read_json(paths[0]) if paths else None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="export.card and export.format as JSON")
    parser.add_argument("--run", required=True)
    parser.add_argument("--run-spec", required=True, help="the run's compiled spec as JSON")
    parser.add_argument("--report", required=True)
    parser.add_argument("--train-manifest", required=True)
    parser.add_argument("--base-manifest", required=True)
    parser.add_argument("--data-manifest", required=True, help="the shard_data manifest (source hashes)")
    parser.add_argument(
        "--gguf-manifest", nargs="*", default=[], help="the export_gguf manifest, when GGUF is asked for"
    )
    parser.add_argument(
        "--benchmarks", nargs="*", default=[], help="the run's benchmarks.json, when it has benchmarks"
    )
    parser.add_argument("--out", required=True, help="the card (Markdown) to write")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    export = json_arg(args.spec_json)
    text = render_card(
        export,
        args.run,
        json_arg(args.run_spec),
        read_json(args.report),
        read_json(args.train_manifest),
        read_json(args.base_manifest),
        read_json(args.data_manifest),
        optional_json(args.gguf_manifest),
        optional_json(args.benchmarks),
    )
    atomic_write_text(args.out, text)
    write_manifest(
        args.manifest,
        "model_card",
        export,
        run=args.run,
        inputs=[
            args.report,
            args.train_manifest,
            args.base_manifest,
            args.data_manifest,
            *filter(None, args.gguf_manifest),
            *filter(None, args.benchmarks),
        ],
        outputs=[args.out],
        counts={"lines": text.count("\n")},
        details={"format": export["format"], "license": export["card"].get("license")},
        environment=args.environment,
    )
    print(f"model card written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
