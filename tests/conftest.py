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
    "tests.preference_fixtures",
    "tests.cpu_profile",
]


# Session builds shared by the workers (tests/workflow_fixtures.py: shared_build), longest first:
# the modules that wait on the longest ones are handed out first, so that no build starts late
# and leaves one worker training alone at the end.
LONG_BUILDS = ("preference_build", "dpo_demo_build", "sft_early_build")


def pytest_collection_modifyitems(config, items):
    """`make test` runs on pytest-xdist workers with `--dist loadscope`: every module runs on
    one worker, so its module fixtures are built once (and the SLURM workflow tests run one at
    a time, as one user's jobs on the test cluster). Modules are handed out in this order
    (`--no-loadscope-reorder`): SLURM first, then the modules that start from the longest shared
    builds (LONG_BUILDS), then the other modules with slow tests, so that the short ones fill
    the gaps at the end."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    build_rank = {}
    for item in items:
        ranks = [LONG_BUILDS.index(name) for name in item.fixturenames if name in LONG_BUILDS]
        rank = min(ranks, default=len(LONG_BUILDS))
        build_rank[item.module.__name__] = min(rank, build_rank.get(item.module.__name__, rank))

    def cost_rank(item):
        module = item.module.__name__
        return (not item.get_closest_marker("slurm"), module not in slow_modules, build_rank[module])

    items.sort(key=cost_rank)
