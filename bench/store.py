"""The demo from a shared store against building it, one run each, same machine and run.

Clone A builds the demo (`snakemake export`) and publishes it to a store folder; clone B, fresh,
runs `snakemake export --config store=...`. Prints `second_clone_build_jobs: N` (tokenize_shard,
base_model, train_model and merge_model jobs of clone B; target 0) and `pull_vs_build: R`
(clone B's seconds over clone A's; below 1 is the point of the store).

    python bench/store.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake  # noqa: E402

BUILD_STEPS = ("tokenize_shard", "base_model", "train_model", "merge_model")


def timed(workdir: Path, *args: str):
    start = time.perf_counter()
    proc = snakemake(workdir, *args, timeout=2400)
    return proc, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        built = copy_workflow(Path(tmp) / "a")
        _, t_build = timed(built, "export")
        snakemake(built, "publish_store", "--config", f"store={store}")
        clone = copy_workflow(Path(tmp) / "b")
        proc, t_pull = timed(clone, "export", "--config", f"store={store}")
        jobs = jobs_run(proc)
    print(f"build_s: {t_build:.1f}")
    print(f"pull_s: {t_pull:.1f}")
    print(f"second_clone_build_jobs: {sum(jobs[step] for step in BUILD_STEPS)}")
    print(f"pull_vs_build: {t_pull / t_build:.2f}")


if __name__ == "__main__":
    main()
