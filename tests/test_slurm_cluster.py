"""End-to-end tests of snakemake on a real local SLURM cluster (ci/slurm_cluster.sh).

Run with: python -m pytest -m slurm tests/test_slurm_cluster.py
They need root (the fixture installs and starts SLURM) and take about a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.slurm_fixtures import run_snakemake_slurm, sacct_states, slurm_run_id

# Two rules, three jobs: both `greet` jobs can run at once (--jobs 2), then `combine`.
# Each job records $SLURM_JOB_ID to prove it really ran inside a SLURM allocation.
TWO_RULES = """
localrules: all

rule all:
    input: "combined.txt"

rule greet:
    output: "greet_{name}.txt"
    shell: "echo hello {wildcards.name} job=$SLURM_JOB_ID > {output}"

rule combine:
    input: expand("greet_{name}.txt", name=["alice", "bob"])
    output: "combined.txt"
    shell: "cat {input} > {output}; echo combine job=$SLURM_JOB_ID >> {output}"
"""

FAILING_RULE = """
rule fail_on_purpose:
    output: "never.txt"
    shell: "echo failing on purpose; exit 1"
"""


def _job_ids(text: str) -> list[str]:
    return [word.split("=", 1)[1] for word in text.split() if word.startswith("job=")]


@pytest.mark.slurm
@pytest.mark.slow
def test_workflow_runs_through_slurm(slurm_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(TWO_RULES)
    proc = run_snakemake_slurm(tmp_path)
    assert proc.returncode == 0, proc.stdout

    for name in ("alice", "bob"):
        text = (tmp_path / f"greet_{name}.txt").read_text()
        assert f"hello {name}" in text
    combined = (tmp_path / "combined.txt").read_text()
    assert "hello alice" in combined and "hello bob" in combined
    job_ids = _job_ids(combined)
    assert len(job_ids) == 3 and all(job_ids), f"not run under SLURM: {combined!r}"

    states = sacct_states(slurm_run_id(proc.stdout))
    assert states == ["COMPLETED"] * 3, states


@pytest.mark.slurm
@pytest.mark.slow
def test_failing_rule_fails_the_workflow(slurm_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(FAILING_RULE)
    proc = run_snakemake_slurm(tmp_path)
    assert proc.returncode not in (0, 124, 137), (proc.returncode, proc.stdout)
    assert "Error in rule fail_on_purpose" in proc.stdout, proc.stdout
    assert not (tmp_path / "never.txt").exists()
    assert sacct_states(slurm_run_id(proc.stdout)) == ["FAILED"]
