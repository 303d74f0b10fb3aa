"""A run's benchmark table from its score targets: rows of base, tuned, delta and stderr, the
flat `<task>/<metric>` metrics the comparison table and the plots read, and its Markdown (the
run's benchmarks.md and the model card's section). Pure functions."""

from __future__ import annotations

from scripts.common.evaluation import cell


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
