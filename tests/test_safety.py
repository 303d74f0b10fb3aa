"""Safety: no remote code unless the spec asks (then a warning), weights from safetensors only,
specs read without running YAML tags, and provenance that names the git commit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import base_model
from scripts.common.manifest import git_commit
from scripts.compiler.spec import SpecError, check_slice, load_spec_file
from tests.workflow_fixtures import REPO, copy_workflow


@pytest.fixture(scope="module")
def local_model(tmp_path_factory) -> Path:
    """A local model folder with safetensors weights and its tokenizer, built as base_model
    builds the demo's (a user's local folder looks the same)."""
    folder = tmp_path_factory.mktemp("local_model")
    texts = (REPO / "data/demo/spell_digits.jsonl").read_text().splitlines()[:500]
    tokenizer = base_model.train_tokenizer(texts, 300)
    tokenizer.save_pretrained(str(folder))
    build = check_slice("model", {"build": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}})["build"]
    base_model.build_model_from_config(build, tokenizer, folder)
    return folder


def run_base_model(tmp_path, spec: dict, capsys) -> tuple[dict, dict, str]:
    out = tmp_path / "model"
    base_model.main(
        ["--spec-json", json.dumps(spec), "--out", str(out), "--manifest", str(tmp_path / "m.json")]
    )
    manifest = json.loads((tmp_path / "m.json").read_text())
    ref = json.loads((out / base_model.BASE_REF).read_text())
    return manifest, ref, capsys.readouterr().err


def test_remote_code_is_off_unless_the_spec_turns_it_on_with_a_warning(tmp_path, local_model, capsys):
    manifest, ref, err = run_base_model(tmp_path / "off", {"path": str(local_model)}, capsys)
    assert manifest["spec"]["trust_remote_code"] is False and ref["trust_remote_code"] is False
    assert "trust_remote_code" not in err
    spec = {"path": str(local_model), "trust_remote_code": True}
    manifest, ref, err = run_base_model(tmp_path / "on", spec, capsys)
    assert ref["trust_remote_code"] is True
    assert "warning: trust_remote_code is on: code shipped with the model will run" in err


def test_a_folder_with_pickled_weights_only_is_refused(tmp_path, local_model, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(local_model, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(SystemExit):
        run_base_model(tmp_path, {"path": str(folder)}, capsys)
    err = capsys.readouterr().err
    assert "has no .safetensors weights (it has pytorch_model.bin)" in err
    assert not (tmp_path / "m.json").exists()


def test_a_spec_with_a_python_yaml_tag_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(spec)
    assert not marker.exists()


def test_manifests_name_the_git_commit_of_a_checkout_and_none_elsewhere(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the tests do not run from a git checkout")
    assert git_commit() in (head.stdout.strip(), head.stdout.strip() + "-dirty")
    copy = copy_workflow(tmp_path / "not_a_checkout")
    probe = "from scripts.common.manifest import git_commit; print(git_commit())"
    outside = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, capture_output=True, text=True, check=True
    )
    assert outside.stdout.strip() == "None"
