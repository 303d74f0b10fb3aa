"""Shared test setup: offline hub, the local SLURM cluster fixture, and a workflow copy fixture."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.slurm_fixtures", "tests.workflow_fixtures"]
