"""Runs that build on runs, and reference log-probs computed once (issue 15), through the real
workflow: the demo's SFT run (the session's demo build, copied), then a DPO run on preference
pairs that starts from it (`model: {from_run: demo}`), swept over three values of beta.

What a user checks: `snakemake -n` shows one reference_logps job for the three runs; training reads
those values (the DPO reward of the untrained policy is zero: the reference is the base itself,
pair for pair); an edit to the SFT run's training reruns the DPO runs and `why` says so, an edit to
its evaluation does not."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow_fixtures import copy_built, jobs_run, kill_at_first_checkpoint, snakemake

pytestmark = pytest.mark.slow

BETAS = [0.05, 0.1, 0.5]
PAIRS = 400


def dry_run_jobs(workdir, target="train"):
    return jobs_run(snakemake(workdir, "-n", target))


@pytest.fixture(scope="module")
def chain(demo_build, tmp_path_factory):
    workdir = copy_built(demo_build, tmp_path_factory.mktemp("chain") / "wf")
    records = [
        json.loads(line) for line in (workdir / "data/demo/spell_digits.jsonl").read_text().splitlines()
    ]
    pairs = []
    for r in records:
        words = r["completion"].split()
        if words[::-1] != words and len(pairs) < PAIRS:  # reversed differs from the answer
            pairs.append(
                {"prompt": r["prompt"], "chosen": r["completion"], "rejected": " ".join(words[::-1])}
            )
    (workdir / "data/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    dpo = {
        **demo,
        "model": {"from_run": "demo"},
        "data": {
            **demo["data"],
            "sources": [
                {
                    "path": "data/pairs.jsonl",
                    "fields": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
                }
            ],
        },
        "train": {**demo["train"], "objective": "dpo", "max_steps": 6, "logging_steps": 1, "save_steps": 6},
        "sweep": {"train.dpo.beta": BETAS},
    }
    (workdir / "specs/dpo.yaml").write_text(yaml.safe_dump(dpo, sort_keys=False))
    planned = dry_run_jobs(workdir)
    built = snakemake(workdir, "train")
    return workdir, planned, jobs_run(built)


def why_block(text: str, run: str) -> str:
    """The indented lines `snakemake why` prints under `run:`."""
    lines = text.splitlines()
    start = lines.index(f"{run}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return "\n".join(lines[start:end])


def runs():
    return [f"dpo--train.dpo.beta={beta}" for beta in BETAS]


def test_a_beta_sweep_computes_the_reference_log_probs_once(chain):
    workdir, planned, ran = chain
    # the demo came trained: the three DPO runs train, on one reference pass
    assert planned["reference_logps"] == 1 and planned["train_model"] == 3, planned
    assert ran["reference_logps"] == 1 and ran["train_model"] == 3, ran
    (manifest_path,) = (workdir / "results/reference").glob("*/logps.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    from scripts.common.manifest import validate_manifest

    validate_manifest(manifest)
    assert manifest["counts"]["pairs"] == PAIRS  # one value per pair, both splits
    import pyarrow.parquet as pq

    table = pq.read_table(manifest_path.with_name("logps.parquet")).to_pylist()
    assert len(table) == PAIRS and len({(r["split"], r["id"]) for r in table}) == PAIRS
    assert all(r["ref_chosen_logps"] < 0 and r["ref_rejected_logps"] < 0 for r in table)
    for run in runs():
        train_manifest = json.loads((workdir / f"results/runs/{run}/train.manifest.json").read_text())
        assert str(manifest_path.with_name("logps.parquet").relative_to(workdir)) in [
            i["path"] for i in train_manifest["inputs"]
        ]
        # the training job ran no reference pass of its own
        assert (
            "Computing reference log probs" not in (workdir / f"logs/runs/{run}/train_model.log").read_text()
        )


def test_training_reads_the_reference_of_each_pair(chain):
    """Before its first update the policy is the base (LoRA starts at zero), so the implicit
    reward beta * (log p_policy - log p_ref) of every pair is zero when the stored reference
    values are the base's, pair for pair; then DPO moves the rewards apart."""
    workdir, _, _ = chain
    for run in runs():
        log = [
            json.loads(line)
            for line in (workdir / f"results/runs/{run}/train/log.jsonl").read_text().splitlines()
        ]
        steps = [e for e in log if "rewards/chosen" in e]
        assert len(steps) == 6, log
        first, last = steps[0], steps[-1]
        assert abs(first["rewards/chosen"]) < 1e-4 and abs(first["rewards/rejected"]) < 1e-4, first
        assert abs(first["loss"] - 0.6931) < 1e-3, first  # log 2: no preference yet
        assert last["rewards/margins"] > 0 and last["loss"] < first["loss"], last


def test_the_dpo_base_is_the_sft_runs_merged_model(chain):
    workdir, _, _ = chain
    (manifest,) = [
        json.loads(p.read_text())
        for p in (workdir / "results/models").glob("*/model.manifest.json")
        if json.loads(p.read_text())["details"]["source"] == "from_run"
    ]
    assert manifest["details"]["parent_run"] == {"run": "demo", "method": "lora"}
    assert "results/runs/demo/train.manifest.json" in [i["path"] for i in manifest["inputs"]]
    folder = workdir / manifest["outputs"][0]["path"].split("/model/")[0] / "model"
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()


def test_an_sft_edit_reruns_the_dpo_runs_only_when_it_reaches_them(chain):
    workdir, _, _ = chain
    spec = workdir / "specs/demo.yaml"
    original = spec.read_text()
    try:
        demo = yaml.safe_load(original)
        demo["evaluate"]["max_new_tokens"] = 12
        spec.write_text(yaml.safe_dump(demo, sort_keys=False))
        assert dry_run_jobs(workdir) == {}, "an evaluation edit of the SFT run retrains nothing"
        demo["train"]["learning_rate"] = 0.002
        spec.write_text(yaml.safe_dump(demo, sort_keys=False))
        planned = dry_run_jobs(workdir)
        assert planned["train_model"] == 4 and planned["reference_logps"] == 1, planned
        why = snakemake(workdir, "why").stdout
        for run in runs():
            block = why_block(why, run)
            assert "model.from_run: demo is retrained" in block and "reference_logps, train_model" in block, (
                why
            )
    finally:
        spec.write_text(original)


def train_key(workdir) -> str:
    from scripts.compiler.spec import load_specs

    runs = {run.name: run for run in load_specs(sorted((workdir / "specs").glob("*.yaml")))}
    return runs["dpo_resume"].keys["train"]


def test_killed_dpo_training_resumes_to_the_same_weights(chain):
    """Kill -9 during DPO training; the rerun resumes from the newest checkpoint and ends with
    the same adapter bytes as a run that was never interrupted."""
    import subprocess

    workdir, _, _ = chain
    spec = yaml.safe_load((workdir / "specs/dpo.yaml").read_text())
    spec.pop("sweep")
    spec["train"] = {
        **spec["train"],
        "max_steps": 40,
        "save_steps": 10,
        "logging_steps": 5,
        "lr_scheduler": "constant",
    }
    (workdir / "specs/dpo_resume.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        target = "results/runs/dpo_resume/train.manifest.json"
        work = workdir / f"results/work/train/{train_key(workdir)}"
        killed_after = kill_at_first_checkpoint(workdir, target, work)
        assert not (workdir / target).exists()
        resumed = snakemake(workdir, target, "--rerun-incomplete")
        assert jobs_run(resumed)["train_model"] == 1 and "reference_logps" not in jobs_run(resumed)
        manifest = json.loads((workdir / target).read_text())
        assert 40 > manifest["counts"]["steps_run"] == 40 - manifest["counts"]["resumed_from_step"]
        assert manifest["counts"]["resumed_from_step"] >= killed_after
        adapter = workdir / "results/runs/dpo_resume/train/model/adapter_model.safetensors"
        resumed_weights = adapter.read_bytes()
        subprocess.run(["rm", "-rf", str(work)], check=True)
        snakemake(workdir, target, "--forcerun", "train_model")
        assert "starting fresh" in (workdir / "logs/runs/dpo_resume/train_model.log").read_text()
        assert adapter.read_bytes() == resumed_weights
    finally:
        (workdir / "specs/dpo_resume.yaml").unlink()
