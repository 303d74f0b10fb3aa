"""The tiny built model the evaluate CLI tests score (registered as a plugin in
tests/conftest.py): `tiny_build`, a folder with a base model built from a config and its tokenizer,
validation tokens of spelled numbers and one plain-text record; `run_cli` runs evaluate_model on
it with tuned = base. Built once per test session (per worker under xdist)."""

from __future__ import annotations

import json

import pytest

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_tokens(path, tokenizer, records) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for rec in records:
        if "text" in rec:
            ids = tokenizer(rec["text"])["input_ids"] + [tokenizer.eos_token_id]
            prompt_ids, prompt, reference = [], "", rec["text"]
        else:
            prompt_ids = tokenizer(rec["prompt"])["input_ids"]
            ids = prompt_ids + tokenizer(" " + rec["completion"], add_special_tokens=False)["input_ids"]
            ids += [tokenizer.eos_token_id]
            prompt, reference = rec["prompt"], rec["completion"]
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
        rows.append(
            {
                "id": rec["id"],
                "split": rec["split"],
                "input_ids": ids,
                "labels": labels,
                "prompt_length": len(prompt_ids),
                "prompt": prompt,
                "reference": reference,
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    from scripts import base_model
    from scripts.common.modeling import load_tokenizer

    root = tmp_path_factory.mktemp("evaluate_cli")
    records = [
        {
            "id": f"{i:04d}",
            "split": "validation" if i % 3 == 0 else "train",
            "prompt": f"Spell {i}:",
            "completion": " ".join(WORDS[int(d)] for d in str(i)),
        }
        for i in range(10, 40)
    ]
    records.append({"id": "9999", "split": "validation", "text": "plain text is scored by loss only"})
    from scripts.data.tokenizer_sample import tokenizer_text

    sample = root / "tokenizer_sample.jsonl"  # as shard_data writes it: training records, id order
    train = [{"id": r["id"], "text": tokenizer_text(r)} for r in records if r["split"] == "train"]
    sample.write_text("".join(json.dumps(r) + "\n" for r in train))
    model_spec = {
        "build": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 300,
            "max_position_embeddings": 64,
            "seed": 0,
        }
    }
    base = root / "base"
    base_model.main(
        [
            "--spec-json",
            json.dumps(model_spec),
            "--records",
            str(sample),
            "--out",
            str(base),
            "--manifest",
            str(root / "base.manifest.json"),
        ]
    )
    write_tokens(root / "tokens.parquet", load_tokenizer(base), records)
    (root / "train.manifest.json").write_text("{}")
    return root


def run_cli(root, out, ev: dict, tokens=None) -> dict:
    from scripts import evaluate_model

    base = str(root / "base")  # tuned = base (a "full" fine-tune folder): both must score alike
    evaluate_model.main(
        [
            "--spec-json",
            json.dumps(ev),
            "--method",
            "full",
            "--base",
            base,
            "--tuned",
            base,
            "--train-manifest",
            str(root / "train.manifest.json"),
            "--tokens",
            str(tokens or root / "tokens.parquet"),
            "--out-dir",
            str(out),
            "--manifest",
            f"{out}.manifest.json",
            "--run",
            "cli",
            "--threads",
            "1",
        ]
    )
    return json.loads((out / "report.json").read_text())
