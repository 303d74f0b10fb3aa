"""Fast checks of the export pieces: spec rules, generation ids, folder layout, the model card's
metadata, the smoke test's verdict, and the hub push up to the network boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scripts import export_model, model_card, push_to_hub
from scripts.common.spec import SpecError, check_slice
from scripts.merge_model import generation_ids, merge_spec
from scripts.smoke_test import verdict

FAKE_TOKEN = "hf_fakeTokenForTests0123456789abcdef"
SMOKE = [{"prompt": "Spell 1:"}]


def test_export_spec_defaults_and_bounds():
    export = check_slice("export", {"smoke_prompts": SMOKE})
    assert (export["format"], export["dtype"], export["max_shard_size"]) == ("merged", "fp32", "5GB")
    assert "push_to_hub" not in export  # opt-in
    pushed = check_slice("export", {"smoke_prompts": SMOKE, "push_to_hub": {"repo_id": "me/demo"}})
    assert pushed["push_to_hub"] == {"repo_id": "me/demo", "private": True}
    with pytest.raises(SpecError, match="export.format: 'zip' is not one of: merged, adapter, both"):
        check_slice("export", {"smoke_prompts": SMOKE, "format": "zip"})
    with pytest.raises(SpecError, match="export.push_to_hub.repo_id"):
        check_slice("export", {"smoke_prompts": SMOKE, "push_to_hub": {"repo_id": "no-owner"}})
    with pytest.raises(SpecError, match="export.push_to_hub.token: unknown key"):
        check_slice("export", {"smoke_prompts": SMOKE, "push_to_hub": {"repo_id": "a/b", "token": "x"}})
    with pytest.raises(SpecError, match="max_shard_size"):
        merge_spec({"dtype": "fp16", "max_shard_size": "5 gigabytes"})
    assert merge_spec({"dtype": "bf16"}) == {"dtype": "bf16", "max_shard_size": "5GB"}


def test_generation_ids_keep_the_base_eos_ids_and_add_the_tokenizers():
    assert generation_ids({}, 1, 2, 0) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    qwen_like = {"bos_token_id": None, "eos_token_id": [151645, 151643], "pad_token_id": 151643}
    assert generation_ids(qwen_like, None, 151645, 151643)["eos_token_id"] == [151645, 151643]
    # no pad token anywhere: generation pads with the first eos id
    assert generation_ids({"eos_token_id": 7}, None, 2, None) == {
        "bos_token_id": None,
        "eos_token_id": [7, 2],
        "pad_token_id": 7,
    }


def test_layout_places_merged_and_adapter_by_format(tmp_path):
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    merged.mkdir()
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert export_model.layout([str(merged)], "merged") == [(merged, ".")]
    assert export_model.layout([str(adapter)], "adapter") == [(adapter, ".")]
    assert export_model.layout([str(merged), str(adapter)], "both") == [(merged, "."), (adapter, "adapter")]
    with pytest.raises(ValueError, match="export.format 'both'"):
        export_model.layout([str(merged)], "both")


def card_inputs(base_metrics):
    spec = {
        "data": {"sources": [{"path": "data/x.jsonl"}]},
        "evaluate": {"metrics": ["exact_match", "bleu"]},
        "export": {"dtype": "fp32"},
    }
    report = {"examples": 10, "metrics": {"base": base_metrics, "tuned": {"exact_match": 0.9, "bleu": 50.0}}}
    prov = {"packages": {"torch": "2.13.0"}, "device": "cpu", "python": "3.11", "git_commit": "abc"}
    train = {
        "spec": {
            "learning_rate": 0.001,
            "per_device_batch_size": 8,
            "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
        },
        "counts": {
            "steps": 5,
            "examples": 40,
            "train_tokens": 400,
            "trainable_parameters": 10,
            "total_parameters": 100,
        },
        "details": {"method": "qlora", "precision": "fp32", "first_loss": 2.0, "final_loss": 1.0},
        "inputs": [{"path": "t.parquet", "sha256": "a" * 64}],
        "provenance": prov,
    }
    base = {"details": {"source": "id", "weights": "Qwen/Qwen2.5-0.5B"}}
    data = {"inputs": [{"path": "data/x.jsonl", "sha256": "b" * 64}]}
    return spec, report, train, base, data


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_evaluation_training_and_provenance():
    spec, report, train, base, data = card_inputs({"exact_match": 0.0, "bleu": 1.0})
    card = {"license": "mit", "language": ["en"], "tags": ["demo"], "summary": "Spells.", "datasets": []}
    text = model_card.render_card({"card": card, "format": "both"}, "run1", spec, report, train, base, data)
    meta = front_matter(text)
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B" and meta["license"] == "mit"
    assert meta["library_name"] == "transformers" and meta["datasets"] == ["data/x.jsonl"]
    assert meta["metrics"] == ["exact_match", "bleu"]
    assert {"tunemake", "qlora", "peft", "demo"} <= set(meta["tags"])
    (result,) = meta["model-index"][0]["results"]
    assert result["task"] == {"type": "text-generation"} and result["dataset"]["split"] == "validation"
    assert {(m["type"], m["value"]) for m in result["metrics"]} == {("exact_match", 0.9), ("bleu", 50.0)}
    assert "| exact_match | 0 | 0.9 |" in text and "| bleu | 1 | 50 |" in text
    assert "- method: qlora" in text and "- loss: 2.0000 -> 1.0000" in text
    assert f"data/x.jsonl: sha256 {'b' * 64}" in text and "torch 2.13.0" in text
    assert 'subfolder="adapter"' in text


def test_card_for_an_adapter_without_base_metrics_or_hub_base():
    spec, report, train, base, data = card_inputs(None)
    base = {"details": {"source": "build", "weights": "."}}
    card = {"license": "apache-2.0", "language": ["en"], "tags": [], "summary": "", "datasets": ["me/data"]}
    text = model_card.render_card(
        {"card": card, "format": "adapter"}, "run1", spec, report, train, base, data
    )
    meta = front_matter(text)
    assert "base_model" not in meta and meta["library_name"] == "peft" and meta["datasets"] == ["me/data"]
    assert "| exact_match | - | 0.9 |" in text


def test_smoke_verdict_names_empty_and_unexpected_outputs():
    ok = {"prompt": "a", "output": "x", "expected": "x", "ok": True}
    empty = {"prompt": "b", "output": "", "expected": None, "ok": None}
    wrong = {"prompt": "c", "output": "y", "expected": "z", "ok": False}
    assert verdict([ok]) is None
    assert (
        verdict([ok, empty, wrong])
        == "smoke test failed: nothing generated for ['b']; 'c' gave 'y', expected 'z'"
    )


def push_args(tmp_path: Path) -> list[str]:
    folder = tmp_path / "export"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / ".snakemake_timestamp").write_text("")
    smoke = tmp_path / "smoke.json"
    smoke.write_text("{}")
    spec = {"push_to_hub": {"repo_id": "me/demo", "private": True}}
    return ["--spec-json", json.dumps(spec), "--folder", str(folder), "--smoke-test", str(smoke)] + [
        "--manifest",
        str(tmp_path / "push.json"),
    ]


def test_push_fails_clearly_offline_and_without_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main(push_args(tmp_path))
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "the hub is offline (HF_HUB_OFFLINE is set)" in err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(SystemExit):
        push_to_hub.main(push_args(tmp_path / "again"), api=object())  # the fake hub is never reached
    assert "export.push_to_hub is set but HF_TOKEN is not" in capsys.readouterr().err
    assert not list(tmp_path.rglob("push.json"))


class FakeHub:
    """Stands in for huggingface_hub.HfApi: the network boundary."""

    def __init__(self, error=None):
        self.calls, self.error = [], error

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        if self.error:
            raise self.error
        return type(
            "Commit", (), {"oid": "c0ffee", "commit_url": "https://hub.example/me/demo/commit/c0ffee"}
        )()


def test_push_uploads_the_folder_and_writes_no_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub = FakeHub()
    push_to_hub.main(push_args(tmp_path), api=hub)
    assert hub.calls[0] == (
        "create_repo",
        "me/demo",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert hub.calls[1][1]["folder_path"] == str(tmp_path / "export")
    assert ".snakemake_timestamp" in hub.calls[1][1]["ignore_patterns"]
    manifest = json.loads((tmp_path / "push.json").read_text())
    assert manifest["details"] == {
        "repo_id": "me/demo",
        "private": True,
        "commit": "c0ffee",
        "url": "https://hub.example/me/demo/commit/c0ffee",
    }
    assert manifest["counts"]["files"] == 1
    assert FAKE_TOKEN not in (tmp_path / "push.json").read_text() + capsys.readouterr().err


def test_push_error_messages_are_redacted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(SystemExit):
        push_to_hub.main(push_args(tmp_path), api=FakeHub(RuntimeError(f"401 for Bearer {FAKE_TOKEN}")))
    err = capsys.readouterr().err
    assert "push to me/demo failed: RuntimeError: 401 for Bearer ***" in err and FAKE_TOKEN not in err
