"""KTO's record shape, {prompt, completion, label}: labels read from booleans or true/false text
(JSONL and CSV), records cleaned, deduped and split by prompt, a bad label named with the fix or
skipped and counted, and the tokens carrying the label; LLaMA-Factory's sharegpt ranking records
made into conversational pairs. Fast: shard_data and tokenize_shard on small files."""

from __future__ import annotations

import json

import pytest

from tests.records_fixtures import jsonl, prepare, tokenize, write

KTO_FIELDS = {"prompt": "q", "completion": "a", "label": "ok"}


def kto_records(rows, path: str = "data/kto.jsonl", **data) -> list[dict]:
    source = {"path": jsonl(path, rows) if path.endswith(".jsonl") else path, "fields": KTO_FIELDS}
    records, _ = prepare([source], **data)
    return records


def test_kto_records_keep_a_boolean_label_from_booleans_or_true_false_text(here):
    rows = [
        {"q": "Spell 1:", "a": "one", "ok": True},
        {"q": "Spell 2:", "a": "owt", "ok": False},
        {"q": "Spell 3:", "a": "three", "ok": "TRUE"},
        {"q": "Spell 4:", "a": "ruof", "ok": " false "},
    ]
    records = {r["prompt"]: r for r in kto_records(rows)}
    assert {p: (r["completion"], r["label"]) for p, r in records.items()} == {
        "Spell 1:": ("one", True),
        "Spell 2:": ("owt", False),
        "Spell 3:": ("three", True),
        "Spell 4:": ("ruof", False),
    }


def test_kto_records_from_csv_read_the_text_labels(here):
    write("data/kto.csv", "q,a,ok\nSpell 1:,one,True\nSpell 2:,owt,False\n")
    records = kto_records(None, path="data/kto.csv")
    assert sorted((r["prompt"], r["label"]) for r in records) == [("Spell 1:", True), ("Spell 2:", False)]


def test_kto_records_are_cleaned_deduped_and_split_by_prompt(here):
    rows = [{"q": f"Spell {i // 4}:", "a": f"answer {i}", "ok": i % 2 == 0} for i in range(80)]
    rows += [{"q": "Spell 0:", "a": "answer 0", "ok": True}]  # a duplicate
    rows += [{"q": "Spell 0:", "a": "   ", "ok": True}]  # an empty completion
    source = {"path": jsonl("data/kto.jsonl", rows), "fields": KTO_FIELDS}
    records, manifest = prepare([source], validation_fraction=0.5)
    assert len(records) == 80
    splits = {}
    for record in records:
        splits.setdefault(record["prompt"], set()).add(record["split"])
    assert all(len(s) == 1 for s in splits.values()), splits  # a prompt never straddles
    assert {next(iter(s)) for s in splits.values()} == {"train", "validation"}


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("yes", "got str 'yes'"),
        (1, "got the number 1"),
        (None, "got NoneType None"),
        (["true"], "got list"),
    ],
)
def test_a_bad_label_is_named_with_the_fix_or_skipped_and_counted(here, value, got):
    rows = [{"q": "Spell 1:", "a": "one", "ok": value}, {"q": "Spell 2:", "a": "two", "ok": True}]
    source = {"path": jsonl("data/kto.jsonl", rows), "fields": KTO_FIELDS}
    with pytest.raises(SystemExit):
        prepare([source])
    source["on_error"] = "skip"
    records, manifest = prepare([source])
    assert manifest["counts"]["records_bad"] == {"bad_label": 1}, manifest["counts"]
    message = manifest["details"]["bad_examples"]
    expected = (
        "data/kto.jsonl:1: field 'ok' must be a boolean (true: a desirable completion, false: an "
        f"undesirable one), {got}"
    )
    assert expected in json.dumps(message) and "write true or false" in json.dumps(message), message
    assert [r["prompt"] for r in records] == ["Spell 2:"]


def test_a_kto_record_tokenizes_like_prompt_completion_with_its_label(tmp_path, model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = {"id": "a" * 16, "split": "train", "prompt": "Spell 12:", "completion": " one two"}
    labelled = [{**plain, "label": False}, {**plain, "id": "b" * 16, "label": True}]
    rows = tokenize(tmp_path, model_dir, labelled)
    assert pq.read_schema(tmp_path / "tokens.parquet").field("label").type == pa.bool_()
    (tmp_path / "sft").mkdir()
    (sft,) = tokenize(tmp_path / "sft", model_dir, [plain])
    for row, label in zip(rows, (False, True)):
        assert row["label"] is label
        assert row["input_ids"] == sft["input_ids"] and row["labels"] == sft["labels"]
        assert row["prompt_length"] == sft["prompt_length"]
    assert "label" not in sft


def test_sharegpt_ranking_records_become_conversational_pairs(here):
    """LLaMA-Factory's sharegpt ranking format: the prompt turns in `conversations`, the two
    answers as single messages."""
    rows = [
        {
            "conversations": [{"from": "human", "value": "Spell 7:"}],
            "chosen": {"from": "gpt", "value": "seven"},
            "rejected": {"from": "gpt", "value": "neves"},
        }
    ]
    source = {
        "path": jsonl("data/ranking.jsonl", rows),
        "fields": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "chat": {"role_key": "from", "content_key": "value"},
    }
    (record,), _ = prepare([source])
    assert record["prompt"] == [{"role": "user", "content": "Spell 7:"}]
    assert record["chosen"] == [{"role": "assistant", "content": "seven"}]
    assert record["rejected"] == [{"role": "assistant", "content": "neves"}]
