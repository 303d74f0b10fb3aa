"""One run's benchmark table: each task's metrics on the base and on the tuned model, the delta
and the harness's standard errors, from the shared score targets.

Writes `results/runs/<run>/benchmarks.json` (rows, plus flat `metrics.base` / `metrics.tuned`
named `<task>/<metric>` as in report.json, which the comparison table, the plots and the model
card read) and `benchmarks.md`.

    python -m scripts.compare_benchmarks --run demo --pairs-json @pairs.json \
        --out results/runs/demo/benchmarks.json --markdown results/runs/demo/benchmarks.md \
        --manifest results/runs/demo/benchmarks.manifest.json
"""

from __future__ import annotations

import argparse
import sys

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_json, atomic_write_text, read_json
from scripts.common.manifest import write_manifest
from scripts.common.report_text import benchmark_table, report, rows


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--spec-json", required=True, help="evaluate.benchmarks as JSON")
    parser.add_argument(
        "--pairs-json", required=True, help="[{task, base, tuned}]: each task's two scores.json"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    pairs = json_arg(args.pairs_json)
    base = [read_json(p["base"]) for p in pairs]
    tuned = [read_json(p["tuned"]) for p in pairs]
    table = rows(pairs, base, tuned)
    if not table:
        fail(f"no benchmark scores for run {args.run}: {[p['task'] for p in pairs]}")
    result = report(args.run, table, tuned[0]["harness"])
    atomic_write_json(args.out, result)
    atomic_write_text(args.markdown, benchmark_table(result))
    write_manifest(
        args.manifest,
        "compare_benchmarks",
        json_arg(args.spec_json),
        run=args.run,
        inputs=[f for p in pairs for f in (p["base"], p["tuned"])],
        outputs=[args.out, args.markdown],
        counts={"tasks": len(pairs), "rows": len(table)},
        details={"metrics": result["metrics"]},
        environment=args.environment,
    )
    print(benchmark_table(result), file=sys.stderr)


if __name__ == "__main__":
    main()
