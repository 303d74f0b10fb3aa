"""Reliability: SIGKILL inside every step of the demo is never taken as done, and the resumed
build equals an uninterrupted one (determinism of two clean builds: tests/test_publish.py)."""

from __future__ import annotations

import json
import os

import pytest

from tests.workflow_fixtures import copy_workflow, jobs_run, reproducible_files, snakemake

pytestmark = pytest.mark.slow

# (script module, fault point, rule that must rerun): the process is killed at that point,
# after its main outputs are written and before its manifest (or final file) is.
FAULTS = [
    ("scripts.environment", "write", "environment"),
    ("scripts.shard_data", "manifest", "shard_data"),
    ("scripts.base_model", "manifest", "base_model"),
    ("scripts.tokenize_shard", "manifest", "tokenize_shard"),
    ("scripts.audit_data", "manifest", "audit_data"),
    ("scripts.train_model", "manifest", "train_model"),
    ("scripts.evaluate_model", "manifest", "evaluate_model"),
    ("scripts.merge_model", "manifest", "merge_model"),
    ("scripts.model_card", "manifest", "model_card"),
    ("scripts.export_model", "manifest", "export_model"),
    ("scripts.smoke_test", "manifest", "smoke_test"),
]


def metrics(workdir):
    return json.loads((workdir / "results/runs/demo/evaluate/report.json").read_text())["metrics"]


def test_sigkill_inside_each_step_is_never_taken_as_done(demo_build, tmp_path, monkeypatch):
    workdir = copy_workflow(tmp_path / "faults")
    for module, point, rule in FAULTS:
        monkeypatch.setenv("TUNEMAKE_FAULT", f"{module}:{point}")
        # --forcerun: the step runs now even if a parallel branch finished it in an earlier round
        killed = snakemake(workdir, "export", "--forcerun", rule, check=False)
        assert killed.returncode != 0, f"{module} was not killed"
        assert "Error in rule " + rule in killed.stdout + killed.stderr, killed.stderr[-3000:]
        monkeypatch.delenv("TUNEMAKE_FAULT")
        pending = jobs_run(snakemake(workdir, "export", "-n"))
        assert rule in pending, f"after killing {rule}, snakemake takes it as done: {pending}"
    assert "TUNEMAKE_FAULT" not in os.environ
    snakemake(workdir, "export")
    assert not jobs_run(snakemake(workdir, "export"))
    reference, recovered = reproducible_files(demo_build), reproducible_files(workdir)
    assert reference.keys() == recovered.keys()
    assert [name for name in reference if reference[name] != recovered[name]] == []
    assert metrics(demo_build) == metrics(workdir)
