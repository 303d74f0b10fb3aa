"""The export steps in a real workflow run (temporary copy): format both, a hub push that stops
at the network boundary, and a token in the environment that no written file contains."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake

pytestmark = pytest.mark.slow
TOKEN = "hf_workflowLeakCheck9f8e7d6c5b4a3210"


def edit_demo(workdir: Path, **sections) -> None:
    path = workdir / "specs/demo.yaml"
    spec = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        spec[section].update(values)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def run_with_env(workdir: Path, env: dict, *args: str):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if value is None:
                patch.delenv(key, raising=False)
            else:
                patch.setenv(key, value)
        return snakemake(workdir, *args, check=False)


@pytest.fixture(scope="module")
def offline_push(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("push"))
    edit_demo(
        workdir,
        evaluate={"max_examples": 64},
        export={"format": "both", "push_to_hub": {"repo_id": "tunemake-tests/demo", "private": True}},
    )
    proc = run_with_env(workdir, {"HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}, "export", "--keep-going")
    return workdir, proc


def test_offline_push_fails_clearly_after_everything_else_is_built(offline_push):
    workdir, proc = offline_push
    assert proc.returncode != 0
    ran = jobs_run(proc)
    assert {"merge_model", "export_adapter", "model_card", "smoke_test", "push_to_hub"} <= set(ran), ran
    log = (workdir / "logs/runs/demo/push_to_hub.log").read_text()
    assert "error: export.push_to_hub is set but the hub is offline (HF_HUB_OFFLINE is set)" in log
    assert "Traceback" not in log
    assert not (workdir / "results/runs/demo/push_to_hub.manifest.json").exists()
    assert (workdir / "results/runs/demo/smoke_test.manifest.json").is_file()


def test_the_token_appears_in_no_file_the_workflow_writes(offline_push):
    workdir, proc = offline_push
    written = [p for p in workdir.rglob("*") if p.is_file()]
    assert any("results" in p.parts for p in written) and any("logs" in p.parts for p in written)
    leaks = [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert not leaks
    assert TOKEN not in proc.stdout + proc.stderr


def test_format_both_puts_the_adapter_in_a_subfolder_with_the_card(offline_push):
    workdir, _ = offline_push
    export = workdir / "results/runs/demo/export"
    assert {p.name for p in export.iterdir()} >= {"model.safetensors", "config.json", "README.md", "adapter"}
    assert {p.name for p in (export / "adapter").iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    }
    assert not list(export.rglob("training_args.bin"))
    # hard links, not copies: the export shares the merged weights' inode
    merged = workdir / "results/runs/demo/merged/model.safetensors"
    assert (export / "model.safetensors").stat().st_ino == merged.stat().st_ino
    meta = yaml.safe_load((export / "README.md").read_text().split("---\n")[1])
    assert meta["library_name"] == "transformers" and "peft" in meta["tags"]
    assert meta["datasets"] == ["data/demo/spell_digits.jsonl"] and "base_model" not in meta


def test_without_a_token_only_the_push_reruns_and_says_why(offline_push):
    workdir, _ = offline_push
    proc = run_with_env(workdir, {"HF_TOKEN": None, "HF_HUB_OFFLINE": None}, "export")
    assert proc.returncode != 0 and set(jobs_run(proc)) == {"push_to_hub"}
    log = (workdir / "logs/runs/demo/push_to_hub.log").read_text()
    assert "export.push_to_hub is set but HF_TOKEN is not" in log


def test_an_adapter_export_of_a_full_fine_tune_fails_before_any_job(offline_push):
    workdir, _ = offline_push
    edit_demo(workdir, train={"method": "full"}, export={"format": "adapter"})
    proc = run_with_env(workdir, {}, "export", "-n")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output and not jobs_run(proc)
    assert "export.format: 'adapter' exports an adapter, but train.method is 'full'" in output
