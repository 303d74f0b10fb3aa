"""The step table: for each run, every step's spec slice, its content key and the steps it reads.

One source for the rules' params (rules/common.smk), the scripts' own slice checks and
`snakemake why`: a step reruns when its slice changes or when a step it reads reruns. Each
manifest is named after the artifact it describes (`X.manifest.json` beside `X`), so the
manifest of any file a step read is found from the file's path (`manifest_of`).

Import-light (stdlib only): the Snakefile imports this at DAG-build time.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.compiler.gguf_rules import training_system
from scripts.compiler.objectives import reads_reference

# step -> the steps whose outputs it reads, for the `export` target, in DAG order.
READS = {
    "shard_data": [],
    "base_model": ["shard_data"],  # a built model trains its tokenizer on shard_data's sample
    "tokenize_shard": ["shard_data", "base_model"],  # cleans the raw shard it tokenizes
    "audit_data": ["tokenize_shard", "base_model"],
    "reference_logps": ["tokenize_shard", "base_model"],
    "train_model": ["tokenize_shard", "base_model", "audit_data", "reference_logps"],
    "evaluate_model": ["tokenize_shard", "base_model", "train_model"],
    "merge_model": ["base_model", "train_model"],
    "export_adapter": ["base_model", "train_model"],
    # GGUF files from the merged model, checked against it on the validation records
    "export_gguf": ["merge_model", "tokenize_shard"],
    # lm-eval scores of the base and of the merged model (content-keyed: a sweep shares the
    # base's), then the run's table of both with deltas
    "score_benchmark": ["base_model", "merge_model"],
    "compare_benchmarks": ["score_benchmark"],
    "model_card": [
        "evaluate_model",
        "train_model",
        "base_model",
        "shard_data",
        "export_gguf",
        "compare_benchmarks",
    ],
    "export_model": ["model_card", "merge_model", "export_adapter", "export_gguf"],
    "smoke_test": ["export_model"],
    "push_to_hub": ["export_model", "smoke_test"],
}
STEP_ORDER = list(READS)
# Steps whose targets are keyed per task and model, not per run: their manifests record each
# target's own slice (scripts/compiler/benchmark_rules.py score_slice). `why` reads their spec changes
# from the per-run step named here, whose slice is the run's list of them.
STANDS_FOR = {"score_benchmark": "compare_benchmarks"}
# Steps outside the table: runtime choices, keyed by nothing and read by no step (track_run logs a
# run to the trackers in --config trackers; rules/track.smk). Their manifests have schemas too.
RUNTIME_STEPS = ("track_run",)
# The manifests a run's build leaves under results/runs/<run>/ (`<name>.manifest.json`); the
# shared data, model and token manifests are found through their inputs.
RUN_MANIFESTS = (
    "train",
    "evaluate",
    "merged",
    "adapter",
    "gguf",
    "model_card",
    "export",
    "smoke_test",
    "push_to_hub",
)
# The model card shows the run's whole compiled spec: any edit rewrites it.
READS_WHOLE_SPEC = {"model_card"}
# The folder(s) each export format is assembled from, and the step that writes each.
EXPORT_PIECES = {
    "merged": ["merge_model"],
    "adapter": ["export_adapter"],
    "both": ["merge_model", "export_adapter"],
}
PIECE_FOLDER = {"merge_model": "merged", "export_adapter": "adapter", "export_gguf": "gguf"}


def export_pieces(export: dict) -> list[str]:
    """The steps whose folders make up the export: the format's pieces, the GGUF files when asked."""
    return EXPORT_PIECES[export["format"]] + (["export_gguf"] if "gguf" in export else [])


def _part(section: dict, *keys) -> dict:
    return {k: section[k] for k in keys if k in section}


def _without(section: dict, *keys) -> dict:
    return {k: v for k, v in section.items() if k not in keys}


# Sampling settings of the evaluate section: an export carries them only when evaluation sampled.
SAMPLING = ("temperature", "top_p", "top_k")


def export_decoding(evaluate: dict) -> dict:
    """The decoding evaluation used, which the export's generation_config.json carries (so that
    `pipeline()` answers as the report says): max_new_tokens and do_sample, plus the sampling
    settings when do_sample is true. stop_at_eos is not carried: an export always stops at EOS."""
    keys = ("max_new_tokens", "do_sample") + (SAMPLING if evaluate.get("do_sample") else ())
    return _part(evaluate, *keys)


def reference_slice(train: dict) -> dict:
    """What the reference log-probs depend on besides the tokens and the base: the precision
    (autocast), the threads (CPU kernels) and, for QLoRA, the quantization of the base. Not
    beta, the learning rate or the method's LoRA settings: the reference is the base itself."""
    quantized = train["method"] == "qlora"
    return {
        "precision": train["precision"],
        "threads": train["threads"],
        "qlora": train["qlora"] if quantized else None,
    }


def gguf_slice(sections: dict) -> dict:
    """What the GGUF files and their parity check depend on: the types, the smoke prompts, the
    data's shape (chat: the Modelfile's template is the chat template; else the raw prompt), the
    chat sources' system message (the Modelfile's SYSTEM) and the evaluated max_new_tokens."""
    export, data = sections["export"], sections["data"]
    if "gguf" not in export:
        return {}
    chat = any("messages" in source["fields"] for source in data["sources"])
    return {
        "gguf": export["gguf"],
        "smoke_prompts": export["smoke_prompts"],
        "chat": chat,
        "system": training_system(data) if chat else None,
        "max_new_tokens": sections["evaluate"]["max_new_tokens"],
    }


def step_slices(sections: dict) -> dict[str, tuple[str, dict]]:
    """step -> (the spec section it comes from, the slice of that section the step reads)."""
    export = sections["export"]
    return {
        "shard_data": ("data", sections["data"]),
        "base_model": ("model", sections["model"]),
        "tokenize_shard": ("tokenize", sections["tokenize"]),
        "audit_data": ("tokenize", sections["tokenize"]),
        "reference_logps": ("train", reference_slice(sections["train"])),
        "train_model": ("train", sections["train"]),
        # benchmarks are their own steps: editing them reruns no generation
        "evaluate_model": ("evaluate", _without(sections["evaluate"], "benchmarks")),
        "score_benchmark": ("evaluate", _part(sections["evaluate"], "benchmarks")),
        "compare_benchmarks": ("evaluate", _part(sections["evaluate"], "benchmarks")),
        # the export's generation_config holds the evaluated decoding: an edit to it reruns these
        "merge_model": (
            "export",
            {**_part(export, "dtype", "max_shard_size"), "generation": export_decoding(sections["evaluate"])},
        ),
        "export_adapter": ("export", {"generation": export_decoding(sections["evaluate"])}),
        "export_gguf": ("export", gguf_slice(sections)),
        "model_card": ("export", _part(export, "card", "format")),
        "export_model": ("export", _part(export, "format")),
        # the smoke test generates as a user does: with the export's own generation_config
        "smoke_test": ("export", _part(export, "smoke_prompts")),
        "push_to_hub": ("export", _part(export, "push_to_hub")),
    }


def run_steps(sections: dict) -> list[str]:
    """The steps a run's export needs (an export format's pieces, a hub push when asked)."""
    export = sections["export"]
    pieces = export_pieces(export)
    skip = {p for p in PIECE_FOLDER if p not in pieces}
    if sections["evaluate"].get("benchmarks"):
        skip.discard("merge_model")  # the tuned model is scored merged, whatever the export format
    else:
        skip |= {"score_benchmark", "compare_benchmarks"}
    if "push_to_hub" not in export:
        skip.add("push_to_hub")
    # the reference model's log-probs are computed once, by their own step, and read by every run
    # that shares the tokens and the reference (a beta or learning-rate sweep)
    if not reads_reference(sections["train"]["objective"]):
        skip.add("reference_logps")
    return [step for step in STEP_ORDER if step not in skip]


def reads(step: str, sections: dict) -> list[str]:
    """The steps `step` reads in this run (a hub or local model reads no data)."""
    if step == "base_model" and "build" not in sections["model"]:
        return []
    return READS[step]


def downstream(changed: set[str], sections: dict, holds: frozenset = frozenset()) -> set[str]:
    """The changed steps and every step of the run that reads one of them, transitively; a step
    in `holds` is known to get inputs with the same bytes, so it reruns only if it changed."""
    steps = run_steps(sections)
    out = set(changed) & set(steps)
    if out:
        out |= READS_WHOLE_SPEC & set(steps)
    for step in steps:  # STEP_ORDER is topological
        if step not in holds and any(up in out for up in reads(step, sections)):
            out.add(step)
    return out


def manifest_of(path: str | Path) -> Path | None:
    """The manifest that describes a file: `X.manifest.json` beside `X`, for the file itself or
    for the folder artifact that holds it (results/models/K/model/tokenizer.json ->
    results/models/K/model.manifest.json)."""
    path = Path(path)
    for artifact in [path, *path.parents]:
        if artifact.name in ("", ".", "results"):
            break
        candidate = artifact.with_name(artifact.name.split(".")[0] + ".manifest.json")
        if candidate != path and candidate.is_file():
            return candidate
    return None


def flatten(value, prefix: str = "") -> dict:
    """Dotted key -> leaf value (lists are leaves): {"train": {"lora": {"r": 8}}} -> {"train.lora.r": 8}."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    out = {}
    for key, sub in value.items():
        out.update(flatten(sub, f"{prefix}.{key}" if prefix else key))
    return out


def differing_values(sections_by_run: dict[str, dict]) -> dict[str, dict]:
    """Per run, the dotted spec keys whose values are not the same in every run (the columns
    of the runs' comparison table)."""
    flat = {run: flatten(sections) for run, sections in sections_by_run.items()}
    keys = sorted({key for values in flat.values() for key in values})
    differing = [
        k for k in keys if len({json.dumps(v.get(k, None), sort_keys=True) for v in flat.values()}) > 1
    ]
    return {run: {k: values.get(k) for k in differing} for run, values in flat.items()}
