"""No-op cost: `snakemake export` on a built demo over a built one-rule workflow, same run.

Prints `noop_ratio: R` (target <= 1.5): what tunemake's DAG build (spec compiler, schema
validation, checkpoint re-evaluation) adds to Snakemake's own start-up.

    python bench/noop.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake  # noqa: E402

ONE_RULE = 'rule one:\n    output:\n        "one.txt",\n    shell:\n        "echo one > {output}"\n'


def median_seconds(workdir: Path, target: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = snakemake(workdir, target)
        times.append(time.perf_counter() - start)
        assert not jobs_run(proc), f"{target} was not a no-op: {jobs_run(proc)}"
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        demo = copy_workflow(Path(tmp) / "demo")
        snakemake(demo, "export")
        one = Path(tmp) / "one"
        one.mkdir()
        (one / "Snakefile").write_text(ONE_RULE)
        snakemake(one, "one.txt")
        t_demo = median_seconds(demo, "export", args.repeats)
        t_one = median_seconds(one, "one.txt", args.repeats)
    print(f"noop_demo_s: {t_demo:.3f}")
    print(f"noop_one_rule_s: {t_one:.3f}")
    print(f"noop_ratio: {t_demo / t_one:.2f}")


if __name__ == "__main__":
    main()
