"""Shared test setup: offline hub, the local SLURM cluster fixture, and a workflow copy fixture."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.slurm_fixtures", "tests.workflow_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def slurm_controller_answers(request):
    """Where SLURM's client is installed, every Snakemake start waits up to 10 s for the SLURM
    plugin's `scontrol show config` unless a controller answers (README: slow start). So on such
    a machine the test cluster starts first, for every test, and the slurm_cluster fixture stops
    what it started when the session ends."""
    if not (shutil.which("scontrol") and os.geteuid() == 0):
        return
    try:
        request.getfixturevalue("slurm_cluster")
    except (pytest.skip.Exception, pytest.fail.Exception):
        pass  # the SLURM tests report it; the others only start slower
