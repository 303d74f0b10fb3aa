"""Evaluate base and tuned model on the same validation examples: generations, metrics, loss.

Writes `predictions.jsonl` (prompt, reference, base and tuned output, per-example scores,
worst tuned examples first) and `report.json` (metrics of both models, validated).

    python -m scripts.evaluate --spec-json "$(cat evaluate.json)" --method lora \
        --base results/models/KEY/model --tuned results/runs/demo/train/model \
        --tokens tokens/*.parquet --out-dir results/runs/demo/evaluate --run demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scripts.common.files import atomic_write_json, atomic_write_text, jsonl_text
from scripts.common.manifest import fail, write_manifest
from scripts.common.spec import SpecError, check_slice, schema_errors

TEXT_METRICS = ("exact_match", "rouge", "bleu")


def score_model(model, tokenizer, rows: list[dict], ev: dict) -> tuple[dict, list[str]]:
    """Metrics and generations of one model on the validation rows."""
    from scripts.common.generation import generate, mean_label_loss
    from scripts.common.metrics import compute_metrics, perplexity

    prompts = [r["input_ids"][: r["prompt_length"]] for r in rows]
    outputs = generate(
        model, tokenizer, prompts, batch_size=ev["batch_size"], max_new_tokens=ev["max_new_tokens"]
    )
    names = [m for m in ev["metrics"] if m in TEXT_METRICS]
    options = {"exact_match": ev["exact_match"]} if "exact_match" in names else {}
    metrics = compute_metrics(names, outputs, [r["reference"] for r in rows], options)
    if "bleu" in metrics:
        metrics["bleu"] = metrics["bleu"]["score"]
    metrics.update(metrics.pop("rouge", {}))
    if "perplexity" in ev["metrics"]:
        loss = mean_label_loss(
            model,
            [(r["input_ids"], r["labels"]) for r in rows],
            batch_size=ev["batch_size"],
            pad_id=tokenizer.pad_token_id,
        )
        metrics["validation_loss"], metrics["perplexity"] = loss, perplexity(loss)
    return {k: round(float(v), 6) for k, v in metrics.items()}, outputs


def per_example(outputs: list[str], rows: list[dict], ev: dict) -> list[dict]:
    from scripts.common.metrics import exact_match_per_example, rouge_per_example

    refs = [r["reference"] for r in rows]
    em = exact_match_per_example(outputs, refs, **ev["exact_match"])
    rl = rouge_per_example(outputs, refs)
    return [{"exact_match": e, "rougeL": round(r, 6)} for e, r in zip(em, rl)]


def prediction_rows(rows, tuned_out, base_out, ev) -> list[dict]:
    tuned_scores = per_example(tuned_out, rows, ev)
    base_scores = per_example(base_out, rows, ev) if base_out else [None] * len(rows)
    out = [
        {
            "id": r["id"],
            "prompt": r["prompt"],
            "reference": r["reference"],
            "base": b,
            "tuned": t,
            "scores": {"tuned": ts, "base": bs},
        }
        for r, t, b, ts, bs in zip(rows, tuned_out, base_out or [None] * len(rows), tuned_scores, base_scores)
    ]
    return sorted(
        out, key=lambda p: (p["scores"]["tuned"]["exact_match"], p["scores"]["tuned"]["rougeL"], p["id"])
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the evaluate section as JSON")
    parser.add_argument("--method", required=True, choices=["full", "lora"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--tuned", required=True)
    parser.add_argument("--train-manifest", required=True)
    parser.add_argument("--tokens", nargs="+", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        ev = check_slice("evaluate", json.loads(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    from scripts.common.modeling import load_base_model, load_tokenizer, load_tuned_model, pin_threads
    from scripts.train import load_split

    pin_threads(args.threads, 0)
    rows = load_split(args.tokens, "validation").to_pylist()[: ev["max_examples"]]
    rows = [r for r in rows if r["prompt_length"] > 0]
    if not rows:
        fail("no validation examples with a prompt: evaluation needs prompt/completion records")
    tokenizer = load_tokenizer(args.tuned, padding_side="left")
    tuned_metrics, tuned_out = score_model(
        load_tuned_model(args.base, args.tuned, args.method), tokenizer, rows, ev
    )
    base_metrics, base_out = (None, None)
    if ev["compare_base"]:
        base_metrics, base_out = score_model(load_base_model(args.base), tokenizer, rows, ev)
    out = Path(args.out_dir)
    predictions = prediction_rows(rows, tuned_out, base_out, ev)
    atomic_write_text(out / "predictions.jsonl", jsonl_text(predictions))
    report = {
        "schema_version": 1,
        "run": args.run,
        "examples": len(rows),
        "metrics": {"base": base_metrics, "tuned": tuned_metrics},
        "worst": predictions[:5],
    }
    errors = schema_errors(report, "report.schema.json")
    if errors:
        fail(f"report does not match its schema: {errors}")
    atomic_write_json(out / "report.json", report)
    write_manifest(
        out / "manifest.json",
        "evaluate",
        ev,
        run=args.run,
        inputs=[*sorted(args.tokens), args.train_manifest],
        outputs=[out / "report.json", out / "predictions.jsonl"],
        counts={"examples": len(rows)},
        details={"metrics": {"base": base_metrics, "tuned": tuned_metrics}},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(json.dumps(report["metrics"], indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
