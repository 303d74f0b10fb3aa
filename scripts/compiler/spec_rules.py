"""Spec rules JSON Schema states badly: one-of choices, options that only make sense
together, safe paths, and rules that span sections. Each message names the key and the fix.

Values arrive validated and with their defaults filled (scripts.compiler.spec.check_slice).
"""

from __future__ import annotations

import re
from pathlib import Path

from scripts.compiler.benchmark_rules import benchmark_errors
from scripts.compiler.gguf_rules import gguf_errors
from scripts.compiler.grpo_rules import grpo_errors
from scripts.compiler.objectives import KINDS, OBJECTIVES, record_kind, resolve


def _evaluate_errors(value: dict) -> list[str]:
    """Sampling knobs need do_sample; the accuracy regex must compile."""
    errors = []
    if not value["do_sample"]:
        for key, off in (("temperature", 1.0), ("top_p", 1.0), ("top_k", 0)):
            if value[key] != off:
                errors.append(
                    f"evaluate.{key}: only applies when sampling; set evaluate.do_sample: true "
                    f"or remove evaluate.{key} (greedy decoding)"
                )
    pattern = value["accuracy"]["extract_regex"]
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.append(f"evaluate.accuracy.extract_regex: {pattern!r} is not a valid regex: {exc}")
    pattern = (value.get("regex_match") or {}).get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.append(
                f"evaluate.regex_match.pattern: {pattern!r} is not a valid regex: {exc}; fix the pattern"
            )
    return errors


RECORD_SHAPES = (
    {"text"},
    {"prompt", "completion"},
    {"instruction", "output"},
    {"instruction", "input", "output"},
    {"messages"},
    {"prompt", "chosen", "rejected"},  # preference pairs (scripts/data/preference_records.py)
    {"messages", "chosen", "rejected"},
    {"chosen", "rejected"},
    {"prompt", "completion", "label"},  # KTO records (scripts/data/preference_records.py)
)


def _tokenize_errors(value: dict) -> list[str]:
    """A chat template comes inline or from a file inside the workflow folder, not both."""
    file = value.get("chat_template_file")
    if value.get("chat_template") and file:
        return ["tokenize: set tokenize.chat_template or tokenize.chat_template_file, not both"]
    if file and (Path(file).is_absolute() or ".." in Path(file).parts):
        return [f"tokenize.chat_template_file: {file!r} must be a relative path inside the workflow folder"]
    if file and not Path(file).is_file():
        return [f"tokenize.chat_template_file: {file!r} not found (relative to the workflow folder)"]
    return []


def semantic_errors(section: str, value: dict) -> list[str]:
    """Rules JSON Schema states badly: one-of choices with readable messages, safe paths."""
    errors = []
    if section == "model":
        chosen = [k for k in ("id", "path", "build", "from_run") if k in value]
        if len(chosen) != 1:
            errors.append(
                "model: give exactly one of model.id (hub), model.path (local folder), "
                "model.build (tiny model from a config) or model.from_run (another run's tuned "
                f"model); got {chosen or 'none'}"
            )
        elif "from_run" in value and (
            set(value) - {"from_run", "trust_remote_code"} or value["trust_remote_code"]
        ):
            errors.append(
                "model.from_run: takes no other model keys (the run it names says where its model "
                f"came from); remove {sorted(set(value) - {'from_run', 'trust_remote_code'}) or ['trust_remote_code']}"
            )
        build = value.get("build") or {}
        if build and build["hidden_size"] % build["num_heads"]:
            errors.append("model.build.num_heads must divide model.build.hidden_size")
    if section == "data":
        for i, source in enumerate(value["sources"]):
            fields = set(source["fields"])
            if fields not in RECORD_SHAPES:
                errors.append(
                    f"data.sources[{i}].fields: map either text, or prompt and completion, or "
                    "instruction and output with an optional input (alpaca), or messages (chat), or "
                    "chosen and rejected with an optional prompt or messages (preference pairs), or "
                    f"prompt, completion and label (KTO); got {sorted(fields)}"
                )
            if ("path" in source) == ("hub" in source):
                errors.append(
                    f"data.sources[{i}]: give either path (a file in the workflow folder) or hub "
                    "(a dataset repo: {repo: org/name, revision: <commit sha>}), "
                    + ("not both" if "path" in source else "neither is set")
                )
                continue
            path = Path(source.get("path", ""))
            if path.is_absolute() or ".." in path.parts:
                errors.append(
                    f"data.sources[{i}].path: {source['path']!r} must be a relative path inside "
                    "the workflow folder (copy or link the file into it)"
                )
    if section == "evaluate":
        errors += _evaluate_errors(value) + benchmark_errors(value)
    if section == "tokenize":
        errors += _tokenize_errors(value)
    if section == "train":
        errors.extend(_train_errors(value))
    return errors


def _train_errors(train: dict) -> list[str]:
    """Train options that only make sense together (the values already have their defaults)."""
    errors = []
    if ("max_steps" in train) == ("epochs" in train):
        errors.append("train: set exactly one of train.max_steps or train.epochs")
    if "qlora" in train and train["method"] != "qlora":
        errors.append(
            f"train.qlora: 4-bit settings apply to method qlora only, but train.method is "
            f"{train['method']!r}; remove train.qlora or set train.method: qlora"
        )
    batch = train.get("global_batch_size")
    if batch is not None and train["gradient_accumulation_steps"] != 1:
        errors.append(
            "train.global_batch_size: accumulation is derived from it; remove "
            "train.gradient_accumulation_steps (or the global batch size)"
        )
    if batch is not None and batch % train["per_device_batch_size"]:
        errors.append(
            f"train.global_batch_size: {batch} is not a multiple of train.per_device_batch_size "
            f"({train['per_device_batch_size']})"
        )
    if train["early_stopping_patience"] is not None and train["eval_steps"] is None:
        errors.append("train.early_stopping_patience: needs validation; set train.eval_steps too")
    return errors + grpo_errors(train)


def _validation_errors(data: dict) -> list[tuple[list, str]]:
    """Evaluation (every export reads its report) scores the validation split, and the
    evaluate step fails on an empty one after training; refuse a spec that cannot have one.
    The data step alone does not need it (scripts run their own slice with fraction 0)."""
    sources = data["sources"]
    if any(s["split"] == "validation" for s in sources):
        return []
    if data["validation_fraction"] > 0 and any(s["split"] == "auto" for s in sources):
        return []
    if data["validation_fraction"] > 0:
        return [
            (
                ["data", "sources"],
                "data.sources: every source has split: train, so there is no validation split and "
                "evaluation (part of every export) would fail after training; give one source "
                "split: auto or split: validation",
            )
        ]
    return [
        (
            ["data", "validation_fraction"],
            f"data.validation_fraction: {data['validation_fraction']} holds out no records, so there is "
            "no validation split and evaluation (part of every export) would fail after training; "
            "set it above 0 (for example 0.1), or add a source with split: validation",
        )
    ]


def _mixing_errors(kinds: list[str]) -> list[tuple[list, str]]:
    """Pairs and KTO records are not mixed with other shapes in one dataset (sft trains on a
    pair's chosen response, and would on a KTO record's undesirable one)."""
    errors = []
    if "pairs" in kinds and set(kinds) != {"pairs"}:
        errors.append(
            (
                ["data", "sources"],
                "data.sources: preference pairs (fields chosen and rejected) cannot be mixed with other "
                "record shapes in one dataset; map chosen and rejected in every source or in none",
            )
        )
    if "labelled" in kinds and set(kinds) != {"labelled"}:
        errors.append(
            (
                ["data", "sources"],
                "data.sources: KTO records (field label) cannot be mixed with other record shapes in one "
                "dataset; map label in every source or in none (pairs: train.objective kto splits them)",
            )
        )
    return errors


def _shape_errors(objective: str, kinds: list[str]) -> list[tuple[list, str]]:
    """The objective must train on the record kinds the sources map (the objective table's
    `accepts`); the first kind it refuses is explained by its entry's message."""
    entry = OBJECTIVES[objective]
    refused = [kind for kind in KINDS if kind in kinds and kind not in entry.accepts]
    if not refused:
        return []
    message = entry.refusals.get(refused[0]) or entry.refusals["*"]
    return [(["train", "objective"], message.format(name=objective))]


def _block_errors(train: dict) -> list[tuple[list, str]]:
    """An objective's settings block is given only with that objective."""
    objective, errors = train["objective"], []
    for name, entry in OBJECTIVES.items():
        block = entry.block
        if block and block in train and block != OBJECTIVES[objective].block:
            errors.append(
                (
                    ["train", block],
                    f"train.{block}: applies to objective {name}, but train.objective is {objective!r}; "
                    f"remove train.{block} or set train.objective: {name}",
                )
            )
    return errors


def _objective_errors(train: dict, data: dict) -> list[tuple[list, str]]:
    """The objective and the record shapes must fit, its settings block comes only with it, and
    its own rules (the objective table's `checks`) hold."""
    kinds = [record_kind(source["fields"]) for source in data["sources"]]
    objective = train["objective"]
    errors = _mixing_errors(kinds) + _shape_errors(objective, kinds) + _block_errors(train)
    for check in OBJECTIVES[objective].checks:
        errors += resolve(check)(train)
    return errors


def cross_section_errors(sections: dict) -> list[tuple[list, str]]:
    """Rules that span sections, or a section and a step that reads another, as (spec path,
    message) pairs."""
    errors = _validation_errors(sections["data"])
    errors += _objective_errors(sections["train"], sections["data"])
    errors += gguf_errors(sections)
    fmt, method = sections["export"]["format"], sections["train"]["method"]
    if fmt != "merged" and method == "full":
        errors.append(
            (
                ["export", "format"],
                f"export.format: {fmt!r} exports an adapter, but train.method is 'full' "
                "(no adapter to export); use export.format: merged",
            )
        )
    return errors
