"""Fast checks of the export pieces: spec rules, generation ids and the evaluated decoding in the
export's generation_config, the chat template training saves, folder layout, the model card's
metadata, the smoke test's verdict, and the hub push up to the network boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scripts import export_adapter, export_model, model_card, push_to_hub
from scripts.common.chat import TemplateError, template_sha256, tokens_chat_template
from scripts.common.modeling import export_generation, generation_ids
from scripts.compiler.spec import SpecError, check_slice, load_specs
from scripts.compiler.steps import step_slices
from scripts.merge_model import merge_spec
from scripts.smoke_test import continuation, verdict
from tests.workflow_fixtures import REPO

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
    greedy = {"max_new_tokens": 32, "do_sample": False}  # evaluate's defaults
    assert merge_spec({"dtype": "bf16"}) == {"dtype": "bf16", "max_shard_size": "5GB", "generation": greedy}
    with pytest.raises(SpecError, match="evaluate.temperature"):
        merge_spec({"generation": {"do_sample": True, "temperature": 0}})


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


def test_the_export_decodes_as_evaluation_did():
    """Greedy evaluation: do_sample false and no sampling field of a hub base (a greedy config
    with one is refused by GenerationConfig.save_pretrained); sampling: evaluate's settings."""
    from transformers import GenerationConfig

    hub_like = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.1}
    hub_like |= {"eos_token_id": [151645, 151643], "pad_token_id": 151643}
    fields = export_generation(hub_like, {"max_new_tokens": 16, "do_sample": False}, None, 151645, 151643)
    assert fields["do_sample"] is False and fields["max_new_tokens"] == 16
    assert fields["temperature"] is fields["top_k"] is fields["top_p"] is None
    assert fields["eos_token_id"] == [151645, 151643] and fields["pad_token_id"] == 151643
    config = GenerationConfig(**hub_like)
    config.update(**fields)
    config.validate(strict=True)  # what save_pretrained checks
    assert config.repetition_penalty == 1.1  # evaluation used the base's other fields too
    sampling = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.5, "top_p": 0.9, "top_k": 0}
    fields = export_generation(hub_like, sampling, 1, 2, 0)
    assert {k: fields[k] for k in sampling} == sampling
    GenerationConfig(**(hub_like | fields)).validate(strict=True)


def test_merge_and_adapter_slices_are_the_evaluated_decoding_and_match_their_manifests(tmp_path):
    """The step table gives merge_model and export_adapter the evaluate section's decoding; the
    scripts record exactly that slice (defaults filled), so `why` and snakemake agree."""
    (run,) = load_specs([REPO / "specs/demo.yaml"])
    slices = {step: part for step, (_, part) in step_slices(run.sections).items()}
    assert slices["merge_model"]["generation"] == {"max_new_tokens": 16, "do_sample": False}
    assert merge_spec(slices["merge_model"]) == slices["merge_model"]
    assert export_adapter.adapter_spec(slices["export_adapter"]) == slices["export_adapter"]
    assert "max_new_tokens" not in slices["smoke_test"]  # the smoke test decodes as the export says
    sampled = {**run.sections, "evaluate": check_slice("evaluate", {"do_sample": True, "temperature": 0.5})}
    generation = step_slices(sampled)["merge_model"][1]["generation"]
    assert generation == {
        "max_new_tokens": 32,
        "do_sample": True,
        "temperature": 0.5,
        "top_p": 1.0,
        "top_k": 0,
    }
    assert merge_spec(step_slices(sampled)["merge_model"][1])["generation"] == generation


def tokens_with_manifest(folder: Path, tokenize: dict, used: str | None) -> Path:
    """A token shard with the manifest tokenize_shard writes beside it (its spec and template hash)."""
    shard = folder / "results/tokens/k/abc.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_bytes(b"")
    manifest = {
        "step": "tokenize_shard",
        "spec": tokenize,
        "details": {"chat_template_sha256": template_sha256(used)},
    }
    (shard.parent / "abc.manifest.json").write_text(json.dumps(manifest))
    return shard


def test_training_saves_the_chat_template_the_tokens_were_rendered_with(tmp_path):
    inline = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    own = "the base tokenizer's own template"
    shard = tokens_with_manifest(
        tmp_path / "a", {"chat_template": inline, "chat_template_file": None}, inline
    )
    assert tokens_chat_template([shard], own) == inline
    (tmp_path / "t.jinja").write_text(inline + "\n")
    from_file = {"chat_template": None, "chat_template_file": "t.jinja"}
    shard = tokens_with_manifest(tmp_path / "b", from_file, inline + "\n")
    assert tokens_chat_template([shard], own, workdir=tmp_path) == inline + "\n"
    (tmp_path / "t.jinja").write_text("edited since tokenizing")
    with pytest.raises(TemplateError, match="not the template the token shards were rendered with"):
        tokens_chat_template([shard], own, workdir=tmp_path)
    # no template in the spec: the tokenizer's own was used (or none); shards without a manifest
    shard = tokens_with_manifest(tmp_path / "c", {"chat_template": None, "chat_template_file": None}, own)
    assert tokens_chat_template([shard], own) == own
    assert tokens_chat_template([tmp_path / "loose.parquet"], None) is None


def test_smoke_continuation_drops_the_prompt_that_pipeline_returns():
    assert continuation("Spell 12:", "Spell 12:one two") == "one two"
    assert continuation("Spell 12:", " one two ") == "one two"


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
            "objective": "sft",  # a train manifest's slice is final: the compiler filled the default
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
