"""Fixtures and helpers shared by the record and tokenization tests (registered as a plugin in
tests/conftest.py): `here`, a workflow folder to run shard_data in; `model_dir`, a small trained
tokenizer; `prepare` (shard_data then cleaning, as tokenize_shard cleans) and `tokenize`."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

FIXTURES = Path(__file__).parent / "data"
TEMPLATE = (FIXTURES / "chat_template.jinja").read_text()
CHAT = [
    {"role": "system", "content": "Spell digits."},
    {"role": "user", "content": "Spell 12:"},
    {"role": "assistant", "content": "one two"},
    {"role": "user", "content": "Spell 3:"},
    {"role": "assistant", "content": "three"},
]
RECORDS = [
    {"id": "a" * 16, "split": "train", "prompt": "Spell 5:", "completion": "five"},
    {"id": "b" * 16, "split": "validation", "text": "plain text to learn"},
    {"id": "c" * 16, "split": "train", "messages": CHAT},
]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A workflow folder to run in (source paths are relative to it), with the fixtures."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURES, tmp_path / "data")
    return tmp_path


def prepare(sources: list[dict], **data) -> tuple[list[dict], dict]:
    """shard_data, then every shard cleaned as tokenize_shard cleans it: (cleaned records by id
    order, shard manifest with `cleaning_dropped`: the drops summed over the shards)."""
    from scripts import shard_data
    from scripts.compiler.spec import check_slice
    from scripts.data.cleaning import clean_records

    spec = {"sources": sources, "num_shards": 2, "validation_fraction": 0.0, **data}
    shard_data.main(
        ["--spec-json", json.dumps(spec), "--shard-dir", "raw", "--manifest", "shards.json"]
        + ["--cache-dir", "cache"]
    )
    manifest = json.loads(Path("shards.json").read_text())
    records, dropped = [], Counter()
    for shard in manifest["details"]["shards"]:
        raw = [json.loads(line) for line in Path(shard["path"]).read_text().splitlines()]
        _, kept, shard_dropped, _ = clean_records(raw, check_slice("data", spec))
        records += kept
        dropped.update(shard_dropped)
    manifest["cleaning_dropped"] = dict(dropped)
    return sorted(records, key=lambda r: r["id"]), manifest


def write(path: str, text: str | bytes) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def jsonl(path: str, rows: list[dict]) -> str:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from scripts.base_model import train_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    texts = ["Spell 12: one two three four five", "plain text to learn <|user|> <|assistant|>"] * 20
    train_tokenizer(texts, 300).save_pretrained(str(folder))
    return folder


def tokenize(tmp_path, model_dir, records=RECORDS, **tok) -> list[dict]:
    from scripts import tokenize_shard
    from scripts.common.files import jsonl_text

    records_file = tmp_path / "clean.jsonl"
    records_file.write_text(jsonl_text(records))
    spec = json.dumps({"max_length": 128, "chat_template": TEMPLATE, **tok})
    out = tmp_path / "tokens.parquet"
    tokenize_shard.main(
        [
            "--spec-json",
            spec,
            "--input",
            str(records_file),
            "--tokenizer",
            str(model_dir),
            "--out",
            str(out),
            "--manifest",
            str(tmp_path / "tokens.manifest.json"),
        ]
    )
    return pq.read_table(out).to_pylist()
