"""Compare runs, like `dvc metrics diff`: every run's tuned metrics (change against its base in
brackets, best per metric in bold) beside the spec values that differ between the runs.

Reads each run's `evaluate/report.json` (and its lm-eval `benchmarks.json`, when it has
benchmarks: columns `<task>/<metric>`); writes the table as Markdown, HTML (for the
Snakemake report), PNG and JSON.

    python -m scripts.compare_runs --reports results/runs/*/evaluate/report.json \
        --diff-json '{"demo": {}}' --markdown results/compare/metrics.md \
        --html results/compare/metrics.html --png results/compare/metrics.png \
        --json results/compare/metrics.json
"""

from __future__ import annotations

import argparse
import html
import json

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_json, atomic_write_text, read_json
from scripts.common.plots import pyplot, save_png
from scripts.common.report_text import cell, with_benchmarks
from scripts.evaluation.evaluation import ordered


def comparison(reports: list[dict], diff: dict[str, dict]) -> dict:
    """The table as data: spec columns, metric columns with direction, rows, best run per metric."""
    better: dict[str, bool] = {}
    for report in reports:
        better.update(report.get("higher_is_better") or {})
    names = ordered({n for r in reports for n in r["metrics"]["tuned"]})
    spec_keys = sorted({k for values in diff.values() for k in values})
    rows = [
        {
            "run": r["run"],
            "spec": {k: diff.get(r["run"], {}).get(k) for k in spec_keys},
            "metrics": r["metrics"],
            "improved": r.get("improved"),
        }
        for r in sorted(reports, key=lambda r: r["run"])
    ]
    best = {}
    for name in names:
        scored = [
            (row["metrics"]["tuned"][name], row["run"]) for row in rows if name in row["metrics"]["tuned"]
        ]
        pick = max if better.get(name, True) else min
        top = pick(value for value, _ in scored)
        best[name] = sorted(run for value, run in scored if value == top)
    return {"spec_keys": spec_keys, "metrics": names, "higher_is_better": better, "rows": rows, "best": best}


def metric_cell(table: dict, row: dict, name: str) -> tuple[str, bool]:
    """'0.995 (+0.995)': tuned value and its change against the base; bold when best."""
    tuned, base = row["metrics"]["tuned"].get(name), (row["metrics"]["base"] or {}).get(name)
    if tuned is None:
        return "-", False
    text = cell(float(tuned)) + (f" ({tuned - base:+.3g})" if base is not None else "")
    return text, row["run"] in table["best"][name]


def header(table: dict) -> list[str]:
    arrows = [f"{n} {'↑' if table['higher_is_better'].get(n, True) else '↓'}" for n in table["metrics"]]
    return ["run", *table["spec_keys"], *arrows]


def body(table: dict) -> list[list[tuple[str, bool]]]:
    """Cells as (text, bold) per row."""
    out = []
    for row in table["rows"]:
        spec = [
            (cell(json.dumps(v) if not isinstance(v, str) else v, 40), False) for v in row["spec"].values()
        ]
        out.append([(row["run"], False), *spec, *(metric_cell(table, row, n) for n in table["metrics"])])
    return out


NOTE = (
    "Tuned-model metrics on each run's validation examples; in brackets the change against the "
    "run's base model. ↑ higher is better, ↓ lower is better; best run per metric in bold."
)
PREFERENCE_NOTE = (
    "Preference runs: chosen_logp and rejected_logp are mean summed log-probs of the responses, "
    "ranking_accuracy the share of pairs whose chosen response the model itself finds likelier "
    "(in brackets: against the base's ranking), reward_accuracy and reward_margin the tuned "
    "model's implicit DPO rewards against its base (no base value: the base's rewards are 0)."
)


def note(table: dict) -> str:
    """The table's legend, with the preference metrics explained when a run has them."""
    pairs = any("reward_accuracy" in n or "ranking_accuracy" in n for n in table["metrics"])
    return NOTE + (" " + PREFERENCE_NOTE if pairs else "")


def markdown(table: dict) -> str:
    cols = header(table)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for cells in body(table):
        lines.append("| " + " | ".join(f"**{t}**" if bold else t for t, bold in cells) + " |")
    spec_note = (
        f"Spec values that differ: {', '.join(table['spec_keys'])}."
        if table["spec_keys"]
        else "All runs share the same spec values."
    )
    return (
        f"# Runs compared ({len(table['rows'])})\n\n{note(table)} {spec_note}\n\n" + "\n".join(lines) + "\n"
    )


def html_page(table: dict) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header(table))
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{'<b>' if b else ''}{html.escape(t)}{'</b>' if b else ''}</td>" for t, b in cells)
        + "</tr>"
        for cells in body(table)
    )
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Runs compared</title><style>{style}</style>'
        f"</head><body><h1>Runs compared ({len(table['rows'])})</h1><p>{html.escape(note(table))}</p>"
        f'<table id="tunemake-compare"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></body></html>\n'
    )


def draw(table: dict, out: str) -> None:
    plt = pyplot()

    cols, cells = header(table), body(table)
    width = max(6.0, 1.45 * len(cols))
    fig, ax = plt.subplots(figsize=(width, 0.3 + 0.22 * (len(cells) + 1)))
    ax.axis("off")
    grid = ax.table(cellText=[[t for t, _ in row] for row in cells], colLabels=cols, loc="center")
    grid.auto_set_font_size(False)
    grid.set_fontsize(8)
    grid.auto_set_column_width(list(range(len(cols))))
    for (r, c), item in grid.get_celld().items():
        if r == 0 or (r > 0 and cells[r - 1][c][1]):
            item.set_text_props(fontweight="bold")
        if c == 0:
            item.set_text_props(ha="left")
    ax.set_title("Runs compared: tuned metrics (change against base); best in bold", fontsize=9)
    save_png(fig, out, tight=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", nargs="+", required=True, help="each run's report.json")
    parser.add_argument(
        "--benchmarks", nargs="*", default=[], help="the benchmarks.json of the runs that have them"
    )
    parser.add_argument("--diff-json", default="{}", help="run -> {dotted spec key: value} that differ")
    parser.add_argument("--markdown", required=True, help="the table as Markdown")
    parser.add_argument("--html", required=True, help="the table as an HTML page")
    parser.add_argument("--png", required=True, help="the table as a PNG")
    parser.add_argument("--json", required=True, help="the table as data")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    benchmarks = {b["run"]: b for b in (read_json(p) for p in args.benchmarks if p)}
    reports = [with_benchmarks(r, benchmarks.get(r["run"])) for r in map(read_json, args.reports)]
    runs = [r["run"] for r in reports]
    if len(set(runs)) != len(runs):
        fail(f"two reports name the same run: {sorted(runs)}; pass each run's report once")
    table = comparison(reports, json_arg(args.diff_json))
    draw(table, args.png)
    atomic_write_text(args.markdown, markdown(table))
    atomic_write_text(args.html, html_page(table))
    atomic_write_json(args.json, table)


if __name__ == "__main__":
    main()
