"""The content-keyed artifacts that runs share, as tables the rules read: content key -> (the
slice its step reads, upstream keys). Runs with equal slices meet in one key, so a sweep builds
each shared artifact once. Import-light (stdlib only): rules/common.smk calls it at DAG-build time."""

from __future__ import annotations

from scripts.compiler.steps import run_steps, step_slices


def shared_artifacts(runs: dict) -> dict[str, dict]:
    """DATA, MODEL, TOKENS, AUDIT and REFERENCE (the last only for runs whose objective reads a
    reference) for `runs` (name -> compiled Run)."""
    tables: dict[str, dict] = {name: {} for name in ("DATA", "MODEL", "TOKENS", "AUDIT", "REFERENCE")}
    for run in runs.values():
        keys = run.keys
        slices = {step: value for step, (_, value) in step_slices(run.sections).items()}
        tables["DATA"][keys["data"]] = slices["shard_data"]
        tables["MODEL"][keys["model"]] = (slices["base_model"], keys["data"], run.parent)
        tables["TOKENS"][keys["tokens"]] = (slices["tokenize_shard"], keys["data"], keys["model"])
        tables["AUDIT"][keys["audit"]] = (slices["audit_data"], keys["data"], keys["tokens"], keys["model"])
        if "reference_logps" in run_steps(run.sections):
            tables["REFERENCE"][keys["reference"]] = (
                slices["reference_logps"],
                keys["data"],
                keys["tokens"],
                keys["model"],
            )
    return tables
