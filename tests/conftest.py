"""Shared test setup: offline hub, the local SLURM cluster (started for the session by
tests/slurm_fixtures.py), the workflow copy fixtures, and how tests are spread over workers."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two xdist workers share the cores, each running jobs with torch's OpenMP threads: threads that
# spin while they wait for work (OpenMP's default) burn the other worker's CPU. Passive waiting
# changes no result (same threads, same order of operations) and halves the CPU time of two
# demo builds run side by side on 2 cores (README: The two commands).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest_plugins = [
    "tests.slurm_fixtures",
    "tests.workflow_fixtures",
    "tests.records_fixtures",
    "tests.evaluate_fixtures",
]


def pytest_collection_modifyitems(config, items):
    """`make test` runs on pytest-xdist workers with `--dist loadscope`: every module runs on
    one worker, so its module fixtures are built once (and the SLURM workflow tests run one at
    a time, as one user's jobs on the test cluster). Modules are handed out in this order
    (`--no-loadscope-reorder`): SLURM first, then modules with slow tests, so that the short
    ones fill the gaps at the end."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}

    def cost_rank(item):
        return (not item.get_closest_marker("slurm"), item.module.__name__ not in slow_modules)

    items.sort(key=cost_rank)
