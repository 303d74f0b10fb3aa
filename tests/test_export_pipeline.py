"""The export as a user meets it: `transformers.pipeline("text-generation", model=export)` with
default settings answers as the evaluation report says (the export's generation_config holds
the evaluated decoding), and a chat model exports the chat template it was trained with, so
that the pipeline chats with a list of messages exactly as evaluation prompted it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from scripts.common.files import jsonl_text, read_jsonl
from tests.workflow_fixtures import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.slow
TEMPLATE = REPO / "tests/data/chat_template.jinja"


def chat_records(rows: list[dict]) -> list[dict]:
    """Spelling as chat: one turn, some with a system message, some two turns long."""
    records = []
    for i, row in enumerate(rows):
        turn = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
        if i % 4 == 3:
            first = rows[i - 1]
            turn = [
                {"role": "user", "content": first["prompt"]},
                {"role": "assistant", "content": first["completion"]},
                *turn,
            ]
        elif i % 3 == 0:
            turn = [{"role": "system", "content": "Be brief."}, *turn]
        records.append({"messages": turn})
    return records


CHAT_SPEC = {
    "spec_version": 1,
    "model": {
        "build": {
            "hidden_size": 128,
            "num_layers": 2,
            "num_heads": 4,
            "intermediate_size": 512,
            "vocab_size": 512,
            "max_position_embeddings": 128,
            "seed": 0,
        }
    },
    "data": {
        "sources": [{"path": "data/chat/spell_chat.jsonl", "fields": {"messages": "messages"}}],
        "num_shards": 2,
        "validation_fraction": 0.1,
    },
    "tokenize": {"max_length": 128, "chat_template_file": "data/chat/chat_template.jinja"},
    "train": {
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "learning_rate": 3e-3,
        "max_steps": 120,
        "per_device_batch_size": 16,
        "logging_steps": 20,
        "save_steps": 1000,
        "threads": 2,
    },
    "evaluate": {"metrics": ["exact_match"], "max_new_tokens": 12, "max_examples": 24},
    "export": {"smoke_prompts": [{"prompt": "Spell 7:"}]},
}


@pytest.fixture(scope="module")
def chat_build(tmp_path_factory) -> Path:
    """A chat run trained with tokenize.chat_template_file, built through `snakemake export`."""
    workdir = copy_workflow(tmp_path_factory.mktemp("chat_export"))
    (workdir / "data/chat").mkdir(parents=True)
    rows = read_jsonl(REPO / "data/demo/spell_digits.jsonl")[:700]
    (workdir / "data/chat/spell_chat.jsonl").write_text(jsonl_text(chat_records(rows)))
    shutil.copy(TEMPLATE, workdir / "data/chat/chat_template.jinja")
    (workdir / "specs/chat.yaml").write_text(yaml.safe_dump(CHAT_SPEC, sort_keys=False))
    snakemake(workdir, "export", "--config", "specs=specs/chat.yaml")
    return workdir


def conversations(workdir: Path) -> dict[str, list[dict]]:
    """Record id -> messages, for every record of the shards (the build holds one data key)."""
    shards = sorted(workdir.glob("results/data/*/raw/*.jsonl"))
    return {r["id"]: r["messages"] for path in shards for r in read_jsonl(path)}


def test_the_export_chats_with_the_trained_template_and_answers_as_evaluation(chat_build):
    from transformers import AutoTokenizer, pipeline

    run = chat_build / "results/runs/chat"
    template = TEMPLATE.read_text()
    for folder in ("train/model", "merged", "export"):
        tokenizer = AutoTokenizer.from_pretrained(run / folder)
        assert tokenizer.chat_template == template, folder
    assert (run / "export/chat_template.jinja").read_text() == template
    assert json.loads((run / "merged.manifest.json").read_text())["details"]["chat_template"] is True

    chat = pipeline("text-generation", model=str(run / "export"), device="cpu")
    by_id = conversations(chat_build)
    predictions = read_jsonl(run / "evaluate/predictions.jsonl")
    assert len(predictions) >= 10
    for prediction in predictions:
        messages = by_id[prediction["id"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        asked = messages[:last]
        # the exact prompt evaluation generated from: the template and its generation prompt
        rendered = chat.tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
        assert rendered == prediction["prompt"]
        reply = chat(asked)[0]["generated_text"]
        assert reply[:-1] == asked and reply[-1]["role"] == "assistant"
        assert reply[-1]["content"].strip() == prediction["tuned"], prediction
    # the run learned something, so equal answers are not equally empty ones
    assert sum(p["tuned"] == p["reference"] for p in predictions) >= len(predictions) // 2


def test_pipeline_with_default_settings_answers_as_the_report(demo_build):
    from transformers import pipeline

    export = demo_build / "results/runs/demo/export"
    generation = json.loads((export / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["max_new_tokens"] == 16
    for key in ("temperature", "top_p", "top_k"):
        assert key not in generation
    generator = pipeline("text-generation", model=str(export))
    (out,) = generator("Spell 4096:")
    # generated_text is the prompt and its continuation (return_full_text defaults to True)
    assert out["generated_text"].startswith("Spell 4096:")
    assert out["generated_text"].removeprefix("Spell 4096:").strip() == "four zero nine six"
    # and every validation prompt answers as in the report
    predictions = read_jsonl(demo_build / "results/runs/demo/evaluate/predictions.jsonl")[:40]
    for prediction in predictions:
        (out,) = generator(prediction["prompt"])
        assert out["generated_text"].removeprefix(prediction["prompt"]).strip() == prediction["tuned"]
    smoke = json.loads((demo_build / "results/runs/demo/smoke_test.manifest.json").read_text())
    assert smoke["details"]["decoding"]["do_sample"] is False
    assert all(o["ok"] for o in smoke["details"]["outputs"]) and smoke["counts"]["passed"] == 2
