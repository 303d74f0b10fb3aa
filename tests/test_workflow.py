"""End to end on the demo spec in a temporary copy of the workflow: a real `snakemake export`,
then edits that must rerun exactly the steps that read the edited section."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.common.manifest import validate_manifest
from scripts.compiler.spec import schema_errors
from tests.workflow_fixtures import jobs_run, snakemake

pytestmark = pytest.mark.slow
DATA_STEPS = {"shard_data", "tokenize_shard", "base_model"}


@pytest.fixture
def built(demo_build, tmp_path) -> Path:
    """A private copy of the built demo (results, Snakemake's metadata and file times), so a
    test that edits the spec or reruns steps changes nothing another test sees."""
    workdir = tmp_path / "demo"
    shutil.copytree(demo_build, workdir, symlinks=True)
    return workdir


def edit_spec(workdir: Path, section: str, key: str, value) -> None:
    path = workdir / "specs" / "demo.yaml"
    spec = yaml.safe_load(path.read_text())
    spec[section][key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def report(workdir: Path) -> dict:
    return json.loads((workdir / "results/runs/demo/evaluate/report.json").read_text())


def test_demo_learns_the_task(built):
    metrics = report(built)["metrics"]
    assert metrics["tuned"]["exact_match"] >= 0.9
    assert metrics["base"]["exact_match"] <= 0.1
    for name in ("exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"):
        assert metrics["tuned"][name] > metrics["base"][name], name
    for name in ("validation_loss", "perplexity"):
        assert metrics["tuned"][name] < metrics["base"][name], name
    assert set(metrics["tuned"]) == set(report(built)["improved"])  # every metric, by its direction
    assert all(report(built)["improved"].values())


def test_export_loads_in_a_fresh_process_and_answers_an_unseen_prompt(built):
    seen = (built / "data/demo/spell_digits.jsonl").read_text()
    assert '"Spell 8073:"' not in seen
    code = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1]); model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "ids = tok('Spell 8073:', return_tensors='pt')\n"
        "out = model.generate(**ids, max_new_tokens=16, do_sample=False)\n"
        "print(tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True).strip())\n"
    )
    folder = built / "results/runs/demo/export"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "eight zero seven three"
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
    smoke = json.loads((built / "results/runs/demo/smoke_test.manifest.json").read_text())
    assert smoke["counts"]["passed"] == smoke["counts"]["checked"] == 2


def test_second_run_does_nothing(built):
    proc = snakemake(built, "export")
    assert not jobs_run(proc)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_every_manifest_validates(built):
    results = built / "results"
    # A manifest is any JSON object with a `step`, wherever a step wrote it (model folders
    # hold transformers' own JSON files, which have none).
    manifests = [p for p in results.rglob("*.json") if p.name != "environment.json"]
    manifests = [p for p in manifests if "step" in json.loads(p.read_text())]
    steps = set()
    for path in manifests:
        manifest = json.loads(path.read_text())
        validate_manifest(manifest)
        steps.add(manifest["step"])
        assert manifest["provenance"]["packages"]["torch"].startswith("2.13")
    assert steps == {
        "shard_data",
        "base_model",
        "tokenize_shard",
        "audit_data",
        "train_model",
        "evaluate_model",
        "merge_model",
        "model_card",
        "export_model",
        "smoke_test",
    }
    assert not schema_errors(
        json.loads((results / "environment.json").read_text()), "manifests/environment.schema.json"
    )
    assert not schema_errors(report(built), "report.schema.json")


def test_editing_evaluate_reruns_only_evaluation(built):
    edit_spec(built, "evaluate", "batch_size", 64)
    ran = jobs_run(snakemake(built, "export"))
    assert ran["evaluate_model"] == 1
    # the card shows the new numbers, so it and the smoke test of the final folder follow
    assert set(ran) <= {"evaluate_model", "model_card", "export_model", "smoke_test", "export"}, ran


def test_editing_export_reruns_only_export_steps(built):
    spec = yaml.safe_load((built / "specs/demo.yaml").read_text())
    edit_spec(built, "export", "card", {**spec["export"]["card"], "summary": "new words"})
    assert set(jobs_run(snakemake(built, "export"))) == {"model_card", "export_model", "smoke_test", "export"}
    assert "new words" in (built / "results/runs/demo/export/README.md").read_text()
    prompts = [*spec["export"]["smoke_prompts"], {"prompt": "Spell 4096:", "expected": "four zero nine six"}]
    edit_spec(built, "export", "smoke_prompts", prompts)  # the card documents the spec: it follows
    assert set(jobs_run(snakemake(built, "export"))) == {"model_card", "export_model", "smoke_test", "export"}
    edit_spec(built, "export", "dtype", "bf16")
    assert set(jobs_run(snakemake(built, "export"))) == {
        "merge_model",
        "model_card",
        "export_model",
        "smoke_test",
        "export",
    }


def test_editing_train_does_not_redo_data_preparation(built):
    edit_spec(built, "train", "max_steps", 150)
    ran = jobs_run(snakemake(built, "export"))
    assert ran["train_model"] == 1
    assert not DATA_STEPS & set(ran), ran


def test_bad_spec_fails_before_any_job(built):
    edit_spec(built, "train", "learning_rat", 0.1)
    proc = snakemake(built, "export", check=False)
    assert proc.returncode != 0
    assert "train.learning_rat: unknown key; did you mean 'learning_rate'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not jobs_run(proc)


def test_the_venv_snakemake_runs_jobs_without_activating_the_venv(workflow):
    """README: `.venv/bin/snakemake export` works without `source .venv/bin/activate`: jobs run
    the interpreter Snakemake runs in, not whatever `python` the PATH holds."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"  # no venv, no pyenv: a plain shell
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/environment.json"],
        cwd=workflow,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    packages = json.loads((workflow / "results/environment.json").read_text())["packages"]
    assert packages["torch"].startswith("2.13")
