"""Evaluate base and tuned model on the same validation examples: generations, metrics, loss.

Writes `predictions.jsonl` (prompt, reference, base and tuned output, per-example scores,
worst tuned example first), `report.json` (flat metrics of both models, which direction is
better, what improved; validated against schemas/report.schema.json) and `summary.md`.

Preference runs (train.objective not sft, read from the train manifest, on tokens with rejected
responses) also get the log-probs of the chosen and rejected responses under both models and the
tuned model's implicit DPO rewards against the base (scripts/evaluation/preference_eval.py); their
reference is the chosen response, so the text metrics score generations against it.

    python -m scripts.evaluate --spec-json "$(cat evaluate.json)" --method lora \
        --base results/models/KEY/model --tuned results/runs/demo/train/model \
        --train-manifest results/runs/demo/train.manifest.json \
        --tokens results/tokens/KEY/*.parquet --out-dir results/runs/demo/evaluate --run demo
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg, path_list
from scripts.common.files import atomic_write_json, atomic_write_text, jsonl_text, read_json
from scripts.common.manifest import write_manifest
from scripts.common.progress import Progress, batch_reporter
from scripts.common.token_splits import load_split
from scripts.compiler.spec import SpecError, check_slice, schema_errors
from scripts.evaluation.evaluation import (
    build_report,
    loss_metrics,
    prediction_rows,
    rounded,
    summary_markdown,
    text_metric_names,
    text_metrics,
    wants_loss,
)
from scripts.evaluation.preference_eval import (
    has_pairs,
    pair_beta,
    pair_scores,
    preference_metrics,
    response_examples,
    summed_logps,
)

PROGRESS: Progress | None = None  # the terminal progress lines (main sets it from --progress)


def select_rows(rows: list[dict], ev: dict) -> tuple[list[dict], list[int]]:
    """The examples scored (first max_examples by id, desirable ones only for KTO records) and the
    indices of those generated from: rows with a prompt, when a text metric is asked for (plain
    text gets loss only)."""
    # KTO records: an undesirable completion is no reference for the metrics (nor for the loss)
    rows = [r for r in rows if r.get("label", True) is not False]
    rows = rows[: ev["max_examples"]] if ev["max_examples"] else rows
    if not rows:
        fail("the validation split is empty: raise data.validation_fraction or add records")
    generated = [i for i, r in enumerate(rows) if r["prompt_length"] > 0] if text_metric_names(ev) else []
    if text_metric_names(ev) and not generated:
        fail(
            f"evaluate.metrics asks for {', '.join(text_metric_names(ev))}, which score generations, "
            "but no validation record has a prompt (plain-text data): use evaluate.metrics: "
            "[loss, perplexity], or map prompt and completion (or chat messages) in data.sources"
        )
    return rows, generated


def pair_logps(model, tokenizer, rows: list[dict], ev: dict) -> tuple[list[float], list[float]]:
    """Summed log-probs of each pair's chosen and of its rejected response under `model`."""
    from scripts.evaluation.generation import label_losses, pad_id_of

    chosen, rejected = response_examples(rows)
    scored = label_losses(model, chosen + rejected, batch_size=ev["batch_size"], pad_id=pad_id_of(tokenizer))
    logps = summed_logps(scored)
    return logps[: len(rows)], logps[len(rows) :]


def score_model(model, tokenizer, rows, generated, ev, timings, name, *, pairs=False, scored=True):
    """One model's report metrics, outputs ({row index: text}), per-row losses and, for
    preference pairs, its log-probs of the responses. scored=False: the log-probs only (the
    reference of the rewards when compare_base is off)."""
    from scripts.evaluation.generation import Decoding, generate, label_losses, mean_loss, pad_id_of

    found: dict[str, float] = {}
    outputs: dict[int, str] = {}
    logps = None
    if pairs:
        start = time.perf_counter()
        logps = pair_logps(model, tokenizer, rows, ev)
        timings[f"{name}_pair_logps"] = time.perf_counter() - start
    generated = generated if scored else []
    if generated:
        start = time.perf_counter()
        prompts = [rows[i]["input_ids"][: rows[i]["prompt_length"]] for i in generated]
        report = batch_reporter(PROGRESS, f"evaluate {name}: generated", len(prompts))
        texts = generate(model, tokenizer, prompts, Decoding.from_spec(ev), report)
        timings[f"{name}_generate"] = time.perf_counter() - start
        outputs = dict(zip(generated, texts))
        found.update(text_metrics(ev, texts, [rows[i]["reference"] for i in generated]))
    losses = None
    if scored and wants_loss(ev):
        start = time.perf_counter()
        examples = [(r["input_ids"], r["labels"]) for r in rows]
        losses = label_losses(model, examples, batch_size=ev["batch_size"], pad_id=pad_id_of(tokenizer))
        timings[f"{name}_loss"] = time.perf_counter() - start
        mean = mean_loss(losses)
        if math.isnan(mean):
            fail("no validation example has a label token: check tokenize.max_length and the data")
        found.update(loss_metrics(ev, mean))
    return {"metrics": rounded(found), "outputs": outputs, "losses": losses, "logps": logps}


def on_accelerator(model):
    """The model on the GPU when there is one (loaders return CPU models); quantized models stay put."""
    import torch

    if torch.cuda.is_available() and getattr(model, "hf_quantizer", None) is None:
        return model.to("cuda")
    return model


def evaluate_models(
    args, ev: dict, rows: list[dict], generated: list[int], timings: dict, pairs=False
) -> dict:
    """Results per model ("tuned", and "base" when compare_base or for preference pairs, whose
    rewards need the base's log-probs), loading one model at a time."""
    from scripts.common.modeling import load_base_model, load_tokenizer, load_tuned_model

    tokenizer = load_tokenizer(args.base, padding_side="left")  # the tokenizer that made the tokens
    loaders = {"tuned": lambda: load_tuned_model(args.base, args.tuned, args.method)}
    if ev["compare_base"] or pairs:
        loaders["base"] = lambda: load_base_model(args.base)
    results = {}
    for name, load in loaders.items():
        start = time.perf_counter()
        model = on_accelerator(load())
        timings[f"{name}_load"] = time.perf_counter() - start
        scored = name == "tuned" or ev["compare_base"]
        results[name] = score_model(
            model, tokenizer, rows, generated, ev, timings, name, pairs=pairs, scored=scored
        )
        del model
    return results


def add_preference_metrics(results: dict, beta: float | None, compare_base: bool) -> None:
    """Put the preference metrics in each model's metrics and per-example scores; the base's
    result is dropped when it was loaded only as the reference (compare_base off)."""
    logps = {name: result["logps"] for name, result in results.items()}
    per_model, per_example = preference_metrics(logps, beta), pair_scores(logps, beta)
    for name, result in results.items():
        result["metrics"].update(rounded(per_model[name]))
        result["pair_scores"] = per_example[name]
    if not compare_base:
        del results["base"]


def preference_of(train_manifest: str, rows: list[dict]) -> dict | None:
    """{"objective", "pairs", "beta"} when the run trained on preference pairs, else None."""
    train = read_json(train_manifest).get("spec", {})  # the finished train slice ({}: no training)
    objective = train.get("objective")
    if objective in (None, "sft") or not has_pairs(rows):
        return None
    return {"objective": objective, "pairs": len(rows), "beta": pair_beta(train)}


def check_regex_match(ev: dict) -> None:
    """Refuse a regex_match pattern that does not compile before any model loads."""
    pattern = (ev.get("regex_match") or {}).get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            fail(f"evaluate.regex_match.pattern: {pattern!r} is not a valid regex: {exc}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the evaluate section as JSON")
    parser.add_argument("--method", required=True, help="the train method (full, lora, qlora, ...)")
    parser.add_argument("--base", required=True, help="base model folder")
    parser.add_argument("--tuned", required=True, help="the trained model or adapter folder")
    parser.add_argument("--train-manifest", required=True)
    parser.add_argument(
        "--tokens", nargs="+", required=True, help="token parquet shards, or @file: a JSON list of them"
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--manifest", required=True, help="evaluate.manifest.json beside --out-dir")
    parser.add_argument("--run", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--environment")
    parser.add_argument(
        "--progress", help="also write progress lines to this descriptor or path (the rule's terminal)"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.tokens = path_list(args.tokens)
    start = time.perf_counter()
    try:
        ev = check_slice("evaluate", json_arg(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    ev.pop("benchmarks")  # not this step's: score_benchmark's (its slice leaves them out)
    check_regex_match(ev)
    global PROGRESS
    PROGRESS = Progress(args.run, args.progress)
    from scripts.common.modeling import pin_threads

    pin_threads(args.threads, ev["seed"])
    rows, generated = select_rows(load_split(args.tokens, "validation").to_pylist(), ev)
    preference = preference_of(args.train_manifest, rows)
    timings: dict[str, float] = {}
    results = evaluate_models(args, ev, rows, generated, timings, pairs=preference is not None)
    if preference:
        add_preference_metrics(results, preference["beta"], ev["compare_base"])
    predictions = prediction_rows(ev, rows, results)
    base = results["base"]["metrics"] if "base" in results else None
    tuned = results["tuned"]["metrics"]
    report = build_report(args.run, len(rows), len(generated), base, tuned, predictions, preference)
    errors = schema_errors(report, "report.schema.json")
    if errors:
        fail(f"report does not match schemas/report.schema.json: {errors}")
    out = Path(args.out_dir)
    atomic_write_text(out / "predictions.jsonl", jsonl_text(predictions))
    atomic_write_text(out / "summary.md", summary_markdown(report, predictions))
    atomic_write_json(out / "report.json", report)
    write_manifest(
        args.manifest,
        "evaluate_model",
        ev,
        run=args.run,
        inputs=[*sorted(args.tokens), args.train_manifest],
        outputs=[out / "report.json", out / "predictions.jsonl", out / "summary.md"],
        counts={"examples": len(rows), "generated": len(generated)},
        details={"metrics": report["metrics"], "improved": report["improved"]},
        timings={**timings, "total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(summary_markdown(report, predictions, worst=3), file=sys.stderr)


if __name__ == "__main__":
    main()
