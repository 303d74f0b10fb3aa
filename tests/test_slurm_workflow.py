"""The real workflow on the local SLURM cluster (ci/slurm_cluster.sh) with profiles/slurm.

A tiny spec runs end to end through `snakemake --executor slurm`; its data artifacts must be
byte-identical to a local run's. A bad source must fail its job and the workflow; a training
job cancelled with `scancel` after a checkpoint must be retried and resume from it.

    python -m pytest -m slurm tests/test_slurm_workflow.py     # as root; a few minutes
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from scripts.training.checkpoints import is_complete
from tests.slurm_fixtures import (
    REPO,
    rule_of,
    run_snakemake_slurm,
    sacct_jobs,
    slurm_run_id,
    slurm_test_profile,
    snakemake_slurm_command,
    venv_env,
)
from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
LOCAL_RULES = {"export", "evaluate", "train", "data"}
# Smaller than the demo in every direction: one shard, a 1-layer model, ten training steps.
TINY = {
    "spec_version": 1,
    "description": "SLURM test: the demo task, shrunk.",
    "model": {
        "build": {
            "hidden_size": 64,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 128,
            "vocab_size": 300,
            "max_position_embeddings": 64,
        }
    },
    "data": {
        "sources": [{"path": "data/tiny.jsonl", "fields": {"prompt": "prompt", "completion": "completion"}}],
        "num_shards": 1,
    },
    "tokenize": {"max_length": 48},
    "train": {"max_steps": 10, "per_device_batch_size": 8, "save_steps": 5, "logging_steps": 5, "threads": 1},
    "evaluate": {
        "metrics": ["exact_match"],
        "max_examples": 16,
        "batch_size": 16,
        "max_new_tokens": 8,
        "compare_base": False,
    },
    "export": {"smoke_prompts": [{"prompt": "Spell 9051:"}]},
}


def tiny_workflow(dest: Path) -> Path:
    """A workflow copy whose only spec is TINY, on the demo data's first 300 records."""
    workdir = copy_workflow(dest)
    for spec in (workdir / "specs").glob("*.yaml"):
        spec.unlink()
    records = (workdir / "data/demo/spell_digits.jsonl").read_text().splitlines()[:300]
    (workdir / "data/tiny.jsonl").write_text("\n".join(records) + "\n")
    write_spec(workdir / "specs/tiny.yaml", TINY)
    return workdir


def write_spec(path: Path, spec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    return slurm_test_profile(tmp_path_factory.mktemp("profile"))


@pytest.fixture(scope="module")
def built(slurm_cluster, profile, tmp_path_factory):
    """(workdir, finished snakemake process) of `snakemake export` of TINY on the cluster."""
    workdir = tiny_workflow(tmp_path_factory.mktemp("slurm") / "wf")
    proc = run_snakemake_slurm(workdir, "export", profile=profile)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return workdir, proc


def artifact_files(workdir: Path) -> dict[str, Path]:
    """The shared data artifacts: records, shards, tokens and the built base model."""
    root = workdir / "results"
    return {
        str(path.relative_to(root)): path
        for part in ("data", "tokens", "models")
        for path in (root / part).rglob("*")
        if path.is_file()
    }


def without_timings(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    manifest.pop("timings", None)
    return manifest


def test_tiny_spec_runs_end_to_end_on_slurm(built):
    workdir, proc = built
    ran = jobs_run(SimpleNamespace(stdout=proc.stdout, stderr=""))  # stderr went to stdout
    assert ran["train_model"] == ran["evaluate_model"] == ran["smoke_test"] == 1, ran
    smoke = json.loads((workdir / "results/runs/tiny/smoke_test.manifest.json").read_text())
    assert smoke["counts"]["prompts"] == 1 and smoke["details"]["outputs"][0]["output"]
    assert (workdir / "results/runs/tiny/export/model.safetensors").is_file()

    # sacct shows every non-local job, each under its rule, each completed
    jobs = sacct_jobs(slurm_run_id(proc.stdout))
    submitted = sorted(rule for rule, n in ran.items() if rule not in LOCAL_RULES for _ in range(n))
    assert sorted(rule_of(job) for job in jobs) == submitted, jobs
    assert {job["State"] for job in jobs} == {"COMPLETED"}, jobs


def test_data_artifacts_match_a_local_run_byte_for_byte(built, tmp_path):
    workdir, _ = built
    local = tiny_workflow(tmp_path / "local")
    snakemake(local, "data", "--profile", str(REPO / "profiles/local"))
    on_slurm, here = artifact_files(workdir), artifact_files(local)
    assert sorted(on_slurm) == sorted(here)
    assert any(name.endswith(".parquet") for name in here) and any("/raw/" in name for name in here)
    for name, path in here.items():
        if name.endswith(".json") and "/model/" not in name:  # manifests: same but for timings
            assert without_timings(path) == without_timings(on_slurm[name]), name
        else:
            assert path.read_bytes() == on_slurm[name].read_bytes(), name


def test_a_failing_job_fails_the_workflow(built, profile):
    workdir, _ = built
    lines = (workdir / "data/tiny.jsonl").read_text().splitlines()
    (workdir / "broken/records.jsonl").parent.mkdir()
    (workdir / "broken/records.jsonl").write_text("\n".join([*lines[:20], "{not json", *lines[20:40]]) + "\n")
    broken = {
        **TINY,
        "data": {**TINY["data"], "sources": [{**TINY["data"]["sources"][0], "path": "broken/records.jsonl"}]},
    }
    write_spec(workdir / "broken/broken.yaml", broken)

    proc = run_snakemake_slurm(
        workdir, "data", "--config", "specs=broken/broken.yaml", "--retries", "0", profile=profile
    )
    assert proc.returncode not in (0, 124, 137), (proc.returncode, proc.stdout[-4000:])
    assert "Error in rule shard_data" in proc.stdout, proc.stdout[-4000:]
    assert "broken/records.jsonl:21" in proc.stdout, proc.stdout[-4000:]  # the rule's log, shown
    jobs = sacct_jobs(slurm_run_id(proc.stdout))
    assert [(rule_of(job), job["State"]) for job in jobs] == [("shard_data", "FAILED")], jobs


def wait_for_checkpoint(work_root: Path, before: set[Path], proc: subprocess.Popen, timeout_s=300) -> Path:
    """The first complete checkpoint in a work folder that did not exist before."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        for folder in work_root.glob("*/checkpoint-*"):
            if folder.parent not in before and is_complete(folder):
                return folder
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint appeared in {work_root} (snakemake rc={proc.poll()})")


def minutes(timelimit: str) -> int:
    """sacct's [D-]HH:MM:SS as minutes."""
    days, _, clock = timelimit.rpartition("-")
    hours, mins, _ = clock.split(":")
    return (int(days or 0) * 24 + int(hours)) * 60 + int(mins)


def running_job(rule: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    ids = [
        job
        for job, _, comment in (line.partition("|") for line in out.split())
        if comment.startswith(f"rule_{rule}_")
    ]
    assert len(ids) == 1, out
    return ids[0]


def test_cancelled_training_is_retried_and_resumes_from_its_checkpoint(built, profile):
    workdir, _ = built
    spec = {**TINY, "train": {**TINY["train"], "max_steps": 400, "save_steps": 20}}
    write_spec(workdir / "specs/tiny.yaml", spec)
    work_root = workdir / "results/work/train"
    before = set(work_root.iterdir())
    log = workdir / "cancel.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            snakemake_slurm_command("--profile", str(profile), "--retries", "1", "train"),
            cwd=workdir,
            env=venv_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # `timeout` leads the group: killpg reaches snakemake too
        )
    try:
        checkpoint = wait_for_checkpoint(work_root, before, proc)
        subprocess.run(["scancel", running_job("train_model")], check=True, timeout=30)
        rc = proc.wait(timeout=660)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert rc == 0, output[-6000:]

    jobs = [job for job in sacct_jobs(slurm_run_id(output)) if rule_of(job) == "train_model"]
    assert [job["State"].split()[0] for job in jobs] == ["CANCELLED", "COMPLETED"], jobs
    first, retry = (minutes(job["Timelimit"]) for job in jobs)
    assert retry == 2 * first, jobs  # the profile's runtime grows with `attempt`

    manifest = json.loads((workdir / "results/runs/tiny/train.manifest.json").read_text())
    resumed = manifest["counts"]["resumed_from_step"]
    assert resumed >= int(checkpoint.name.split("-")[1]) and manifest["counts"]["steps"] == 400
    train_log = (workdir / "logs/runs/tiny/train_model.log").read_text()
    assert f"resuming from step {resumed}" in train_log, train_log[-3000:]


def test_training_with_two_processes_in_one_job(built, profile):
    workdir, _ = built
    write_spec(workdir / "specs/tiny.yaml", {**TINY, "train": {**TINY["train"], "max_steps": 6}})
    resources = ["train_model:nproc=2", "train_model:cpus_per_task=2", "train_model:mem_mb=3000"]
    proc = run_snakemake_slurm(workdir, "train", "--set-resources", *resources, profile=profile)
    assert proc.returncode == 0, proc.stdout[-6000:]

    train_log = (workdir / "logs/runs/tiny/train_model.log").read_text()
    assert "torch.distributed.run --nproc-per-node=2 --standalone" in train_log, train_log[-3000:]
    manifest = json.loads((workdir / "results/runs/tiny/train.manifest.json").read_text())
    assert manifest["details"]["world_size"] == 2 and manifest["counts"]["steps"] == 6
    jobs = sacct_jobs(slurm_run_id(proc.stdout))
    assert [(rule_of(job), job["State"]) for job in jobs] == [("train_model", "COMPLETED")], jobs
