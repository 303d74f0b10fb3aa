"""Report text shared by several steps (pure functions): Markdown table cells, the paragraph that
explains a preference run's metrics, the model card's "Run it locally" section of a GGUF export,
and a run's benchmark table from its score targets (rows of base, tuned, delta and stderr, the
flat `<task>/<metric>` metrics the comparison table and the plots read, and its Markdown)."""

from __future__ import annotations

import math


def rows(pairs: list[dict], base_scores: list[dict], tuned_scores: list[dict]) -> list[dict]:
    """One row per (task, metric) the tuned model was scored on."""
    out = []
    for pair, base, tuned in zip(pairs, base_scores, tuned_scores):
        for name, metrics in tuned["scores"].items():
            better = tuned["higher_is_better"].get(name, {})
            for metric, value in metrics.items():
                before = base["scores"].get(name, {}).get(metric, {})
                out.append(
                    {
                        "task": pair["task"],
                        "name": name,
                        "metric": metric,
                        "base": before.get("value"),
                        "tuned": value["value"],
                        "delta": None if before.get("value") is None else value["value"] - before["value"],
                        "base_stderr": before.get("stderr"),
                        "tuned_stderr": value["stderr"],
                        "higher_is_better": bool(better.get(metric.split(" (")[0], True)),
                        "samples": tuned["samples"].get(name),
                    }
                )
    return out


def report(run: str, table: list[dict], harness: str | None) -> dict:
    key = [f"{r['name']}/{r['metric']}" for r in table]
    return {
        "run": run,
        "harness": harness,
        "rows": table,
        "metrics": {
            "base": {k: r["base"] for k, r in zip(key, table) if r["base"] is not None},
            "tuned": {k: r["tuned"] for k, r in zip(key, table)},
        },
        "higher_is_better": {k: r["higher_is_better"] for k, r in zip(key, table)},
    }


def _with_stderr(value, stderr) -> str:
    if value is None:
        return "-"
    return cell(value) + (f" ± {cell(stderr)}" if stderr is not None else "")


def benchmark_table(result: dict) -> str:
    lines = [
        f"# Benchmarks of {result['run']} (lm-evaluation-harness {result['harness']})",
        "",
        "| task | metric | base | tuned | delta |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        arrow = "↑" if r["higher_is_better"] else "↓"
        delta = "-" if r["delta"] is None else f"{r['delta']:+.3g}"
        lines.append(
            f"| {r['name']} | {r['metric']} {arrow} | {_with_stderr(r['base'], r['base_stderr'])} "
            f"| {_with_stderr(r['tuned'], r['tuned_stderr'])} | {delta} |"
        )
    return "\n".join(lines) + "\n"


def with_benchmarks(report: dict, benchmarks: dict | None) -> dict:
    """A report.json with the run's benchmark metrics (`<task>/<metric>`) added beside its own,
    for the comparison table and the plots."""
    if not benchmarks:
        return report
    metrics = report["metrics"]
    return {
        **report,
        "metrics": {
            **metrics,
            "base": None if metrics["base"] is None else {**metrics["base"], **benchmarks["metrics"]["base"]},
            "tuned": {**metrics["tuned"], **benchmarks["metrics"]["tuned"]},
        },
        "higher_is_better": {**report.get("higher_is_better", {}), **benchmarks["higher_is_better"]},
        "improved": {
            **(report.get("improved") or {}),
            **{
                f"{r['name']}/{r['metric']}": (r["delta"] > 0) == r["higher_is_better"]
                for r in benchmarks["rows"]
                if r["delta"] not in (None, 0)
            },
        },
    }


def cell(value, limit: int = 120) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, long text cut."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|") or '""'


PREFERENCE_NOTE = (
    "chosen_logp / rejected_logp: mean summed log-prob (nats) of the chosen / rejected response "
    "given the prompt. ranking_accuracy: share of pairs where the model itself gives the chosen "
    "response the higher log-prob (for the base, the reference: about 0.5 when it has no "
    "preference and the responses are alike in length; summed log-probs favour the shorter). "
    "reward_accuracy: share of pairs where the tuned model's implicit DPO reward "
    "beta * (log p_tuned - log p_base) of the chosen response exceeds the rejected one's; "
    "reward_margin: the mean difference of those rewards (the base's own rewards are all 0, so "
    "it has neither). Text metrics score generations against the chosen responses."
)


def preference_markdown(report: dict) -> str:
    """The paragraph that explains a preference run's metrics (empty for other runs)."""
    pref = report.get("preference")
    if not pref:
        return ""
    beta = (
        f"beta {pref['beta']:g} (train.{pref['objective']}.beta)" if pref["beta"] is not None else "no beta"
    )
    return (
        f"\n\n## Preference pairs ({pref['pairs']} validation pairs, {pref['objective']}, {beta})"
        f"\n\n{PREFERENCE_NOTE}"
    )


def run_locally_markdown(run: str, gguf_manifest: dict) -> str:
    """The model card's "Run it locally" section: the commands, and the parity figures."""
    parity = gguf_manifest["details"]["parity"]
    types = gguf_manifest["spec"]["gguf"]["types"]  # in spec order: the first is the Modelfile's
    first = f"model-{types[0]}.gguf"
    rows = "\n".join(
        f"| {t} | model-{t}.gguf | {'yes' if r['tokens_equal'] else 'NO'} ({r['records']} records) | "
        f"{r['max_logit_diff']:.2g} | {r['next_token_agreement']:.4f} | "
        f"{'yes' if r['generations_equal'] else 'no'} |"
        for t, r in ((t, parity[t]) for t in types)
    )
    return f"""GGUF files for llama.cpp, Ollama and LM Studio, each checked against the safetensors
model on the validation records (transformers loading the GGUF alone):

| type | file | token ids equal | max logit diff | greedy next-token agreement | smoke generations equal |
|---|---|---|---|---|---|
{rows}

```bash
ollama create {run} -f Modelfile    # the Modelfile's FROM is {first}
ollama run {run}
llama-cli -m {first} -p "{_prompt_example(gguf_manifest)}" -n 32 --temp 0
```"""


def _prompt_example(gguf_manifest: dict) -> str:
    prompts = gguf_manifest["spec"].get("smoke_prompts") or [{"prompt": "Hello"}]
    return prompts[0]["prompt"].replace('"', '\\"').replace("\n", "\\n")
