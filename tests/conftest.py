"""Shared test setup: offline hub, the local SLURM cluster (started for the session by
tests/slurm_fixtures.py), the workflow copy fixtures, and how tests are spread over workers."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.slurm_fixtures", "tests.workflow_fixtures"]


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) every module runs on one
    worker, so its module fixtures are built once, and all SLURM tests run on one worker, one at
    a time, as jobs of one user on the shared test cluster. The longest groups go first (SLURM,
    then modules with slow tests) so that the short ones fill the gaps at the end."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    for item in items:
        group = "slurm" if item.get_closest_marker("slurm") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(
        key=lambda item: (not item.get_closest_marker("slurm"), item.module.__name__ not in slow_modules)
    )
