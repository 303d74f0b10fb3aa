"""Plot a run's evaluation as bars, base against tuned, one panel per metric (scales differ).

Reads `results/runs/<run>/evaluate/report.json` (and the run's lm-eval benchmarks.json, when it
has benchmarks: their panels are named `<task>/<metric>`); each panel title says which direction is
better and whether the tuned model improved. Writes a PNG.

    python -m scripts.plot_metrics --report results/runs/demo/evaluate/report.json \
        --out results/runs/demo/report/metrics.png
"""

from __future__ import annotations

import argparse
import math

from scripts.common.cli import fail
from scripts.common.files import read_json
from scripts.common.plots import pyplot, save_png
from scripts.common.report_text import with_benchmarks
from scripts.evaluation.evaluation import ordered

COLUMNS = 4
COLORS = {"base": "#9e9e9e", "tuned": "#1f77b4"}


def panels(report: dict) -> list[dict]:
    """One panel per metric: title, bar labels, values (base first when there is one)."""
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    out = []
    for name in ordered(tuned):
        value = tuned[name]
        arrow = "↑" if report.get("higher_is_better", {}).get(name, True) else "↓"
        improved = (report.get("improved") or {}).get(name)
        verdict = "" if improved is None else (" ✓" if improved else " ✗")
        # reward_accuracy and reward_margin are the tuned model's only (the base is the reference)
        bars = [("base", base[name]), ("tuned", value)] if base and name in base else [("tuned", value)]
        out.append({"title": f"{name} {arrow}{verdict}", "bars": bars})
    return out


def draw(report: dict, out: str) -> None:
    plt = pyplot()

    items = panels(report)
    rows = math.ceil(len(items) / COLUMNS)
    cols = min(COLUMNS, len(items))
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.5 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for ax, item in zip(axes.flat, items):
        labels, values = zip(*item["bars"])
        bars = ax.bar(labels, values, color=[COLORS[label] for label in labels])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(item["title"], fontsize=10)
        ax.margins(y=0.2)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(items) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{report['run']}: base against tuned on {report['examples']} validation examples "
        "(↑ higher is better, ↓ lower)",
        fontsize=10,
    )
    save_png(fig, out)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True, help="the evaluation's report.json")
    parser.add_argument("--benchmarks", nargs="*", default=[], help="the run's benchmarks.json, if any")
    parser.add_argument("--out", required=True, help="PNG to write")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    benchmarks = [read_json(p) for p in args.benchmarks if p]  # an empty input list is ''
    report = with_benchmarks(read_json(args.report), benchmarks[0] if benchmarks else None)
    if not report["metrics"]["tuned"]:
        fail(f"{args.report}: no metrics to plot; set evaluate.metrics in the spec")
    draw(report, args.out)


if __name__ == "__main__":
    main()
