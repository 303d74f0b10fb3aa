"""What evaluation computes from generations and losses: report metrics, per-example scores,
worst-first predictions, report.json and its Markdown summary. Pure functions, no torch."""

from __future__ import annotations

from scripts.common import metrics as M
from scripts.common.report_text import cell, preference_markdown
from scripts.evaluation import preference_eval as P

# evaluate.metrics scored on generations, and those scored on the reference tokens' loss
TEXT_METRICS = tuple(name for name, metric in M.TABLE.items() if metric.function is not None)
LOSS_METRICS = tuple(name for name, metric in M.TABLE.items() if metric.function is None)
WORST_IN_REPORT = 5
# Report metric name -> whether a larger value is better: text and loss metrics, then the
# preference metrics of preference runs (scripts/evaluation/preference_eval.py).
HIGHER_IS_BETTER = {**M.HIGHER_IS_BETTER, **P.HIGHER_IS_BETTER}


def improved(name: str, base: float, tuned: float) -> bool:
    """Whether `tuned` is strictly better than `base` on report metric `name`."""
    return tuned > base if HIGHER_IS_BETTER[name] else tuned < base


def ordered(names) -> list[str]:
    """Report metric names in a fixed reading order (matches first, then overlap, then loss,
    then preference metrics)."""
    known = list(HIGHER_IS_BETTER)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def text_metric_names(ev: dict) -> list[str]:
    return [name for name in ev["metrics"] if name in TEXT_METRICS]


def wants_loss(ev: dict) -> bool:
    return any(name in LOSS_METRICS for name in ev["metrics"])


def metric_options(ev: dict) -> dict[str, dict]:
    """The spec's options per text metric, as keyword arguments of scripts.common.metrics."""
    options = {}
    for name in TEXT_METRICS:
        metric = M.TABLE[name]
        given = ev.get(metric.options) if metric.options else None
        options[name] = {**given, "seed": ev["seed"]} if metric.seeded else given
    return options


def text_metrics(ev: dict, outputs: list[str], references: list[str]) -> dict[str, float]:
    """Flat report metrics (rouge -> rouge1..rougeLsum, bleu/chrf -> their 0-100 score)."""
    names = text_metric_names(ev)
    options = metric_options(ev)
    results = M.compute_metrics(names, outputs, references, {n: options[n] for n in names})
    flat: dict[str, float] = {}
    for name, value in results.items():
        if name == "rouge":
            flat.update(value)
        elif isinstance(value, dict):
            flat[name] = value["score"]
        else:
            flat[name] = value
    return flat


def loss_metrics(ev: dict, mean_loss: float) -> dict[str, float]:
    out = {"validation_loss": mean_loss}
    if "perplexity" in ev["metrics"]:
        out["perplexity"] = M.perplexity(mean_loss)
    return out


def rounded(values: dict[str, float], digits: int = 6) -> dict[str, float]:
    return {k: round(float(v), digits) for k, v in values.items()}


def per_example_rouge_type(ev: dict) -> str:
    types = ev["rouge"]["rouge_types"]
    return "rougeL" if "rougeL" in types else types[0]


def example_column(ev: dict, name: str) -> tuple[str, dict]:
    """(the per-example score's name, the per-example function's options) of a text metric:
    rouge scores one of its types per example (per_example_rouge_type)."""
    if name == "rouge":
        kind = per_example_rouge_type(ev)
        return kind, {"rouge_type": kind, "use_stemmer": ev["rouge"]["use_stemmer"]}
    options = M.TABLE[name].options
    return name, dict(ev.get(options) or {}) if options else {}


def example_scores(ev: dict, outputs: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-example scores of the text metrics that have one (corpus BLEU has none)."""
    columns: dict[str, list[float]] = {}
    for name in text_metric_names(ev):
        per_example = M.TABLE[name].per_example
        if per_example is not None:
            column, options = example_column(ev, name)
            columns[column] = per_example(outputs, references, **options)
    return [{k: round(v[i], 6) for k, v in columns.items()} for i in range(len(outputs))]


def primary_score(ev: dict) -> str | None:
    """The per-example score that orders predictions (worst first): the first text metric
    of the spec that has one; None when only loss is asked for."""
    for name in text_metric_names(ev):
        if M.TABLE[name].per_example is not None:
            return example_column(ev, name)[0]
    return None


def _worst_first_key(primary: str | None):
    def key(prediction: dict):
        scores = prediction["scores"]["tuned"]
        score = scores.get(primary) if primary else None
        loss = scores.get("loss")
        return (
            score is None,
            score if score is not None else 0.0,
            -loss if loss is not None else 0.0,
            prediction["id"],
        )

    return key


def prediction_rows(ev: dict, rows: list[dict], results: dict) -> list[dict]:
    """One record per validation example, worst tuned example first. `results[model]` holds
    `outputs` ({row index: text}), `losses` ([(sum, count)] per row, or None) and, for
    preference pairs, `pair_scores` (per row: logp_margin, reward_margin)."""
    scores: dict[str, dict[int, dict]] = {}
    for model, result in results.items():
        indices = sorted(result["outputs"])
        texts = [result["outputs"][i] for i in indices]
        refs = [rows[i]["reference"] for i in indices]
        per = example_scores(ev, texts, refs) if texts else []
        scores[model] = {i: dict(s) for i, s in zip(indices, per)}
        for i, (total, count) in enumerate(result["losses"] or []):
            if count:
                scores[model].setdefault(i, {})["loss"] = round(total / count, 6)
        for i, extra in enumerate(result.get("pair_scores") or []):
            scores[model].setdefault(i, {}).update(extra)
    out = []
    for i, row in enumerate(rows):
        record = {"id": row["id"], "prompt": row["prompt"], "reference": row["reference"], "scores": {}}
        for model in ("base", "tuned"):
            result = results.get(model)
            record[model] = result["outputs"].get(i) if result else None
            record["scores"][model] = scores[model].get(i, {}) if result else None
        out.append(record)
    return sorted(out, key=_worst_first_key(primary_score(ev)))


def build_report(
    run: str,
    rows: int,
    generated: int,
    base: dict | None,
    tuned: dict,
    worst: list,
    preference: dict | None = None,
) -> dict:
    """report.json: flat metrics per model, which direction is better, and what improved (for
    the metrics both models have: reward_accuracy and reward_margin are the tuned model's
    only). `preference`: {"objective", "pairs", "beta"} of a preference run, else None."""
    better = {name: HIGHER_IS_BETTER[name] for name in tuned}
    changed = None
    if base is not None:
        changed = {name: improved(name, base[name], tuned[name]) for name in tuned if name in base}
    report = {
        "schema_version": 1,
        "run": run,
        "examples": rows,
        "generated": generated,
        "metrics": {"base": base, "tuned": tuned},
        "higher_is_better": better,
        "improved": changed,
        "worst": worst[:WORST_IN_REPORT],
    }
    if preference is not None:
        report["preference"] = preference
    return report


def metrics_markdown(report: dict) -> str:
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    lines = ["| metric | better | base | tuned | change | improved |", "|---|---|---|---|---|---|"]
    for name in ordered(tuned):
        value = tuned[name]
        arrow = "↑ higher" if report["higher_is_better"][name] else "↓ lower"
        before = base.get(name) if base else None
        change = f"{value - before:+.4g}" if before is not None else "-"
        verdict = (report["improved"] or {}).get(name)
        mark = "-" if verdict is None else ("yes" if verdict else "**no**")
        lines.append(f"| {name} | {arrow} | {cell(before)} | {cell(value)} | {change} | {mark} |")
    return "\n".join(lines)


def summary_markdown(report: dict, predictions: list[dict], worst: int = 10) -> str:
    """summary.md: the metric table and the worst examples, for people and the Snakemake report."""
    head = (
        f"# Evaluation of {report['run']}\n\n{report['examples']} validation examples "
        f"({report['generated']} with a prompt, generated by both models).\n\n"
    )
    rows = ["| id | prompt | reference | base | tuned | tuned scores |", "|---|---|---|---|---|---|"]
    for p in predictions[:worst]:
        scores = ", ".join(f"{k} {v:.3g}" for k, v in (p["scores"]["tuned"] or {}).items())
        rows.append(
            f"| {p['id'][:8]} | {cell(p['prompt'])} | {cell(p['reference'])} | {cell(p['base'])} "
            f"| {cell(p['tuned'])} | {scores or '-'} |"
        )
    pairs = preference_markdown(report)
    worst_part = f"\n\n## Worst {min(worst, len(predictions))} examples (tuned)\n\n" + "\n".join(rows)
    return head + metrics_markdown(report) + pairs + worst_part + "\n"
