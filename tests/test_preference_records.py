"""Preference pairs in: each shape of `fields` mapped to {prompt, chosen, rejected}, cleaned,
deduped and split by prompt, and every bad pair named (issue 15, item 2)."""

from __future__ import annotations

import json

import pytest

from tests.records_fixtures import CHAT, jsonl, prepare, tokenize

EXPLICIT = {"prompt": "q", "chosen": "good", "rejected": "bad"}


def pairs(rows: list[dict], fields: dict, **data) -> list[dict]:
    source = {"path": jsonl("data/pairs.jsonl", rows), "fields": fields}
    records, _ = prepare([source], **data)
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]


def test_explicit_text_pairs(here):
    rows = [{"q": "Spell 12:", "good": "one two", "bad": "twelve"}]
    assert pairs(rows, EXPLICIT) == [{"prompt": "Spell 12:", "chosen": "one two", "rejected": "twelve"}]


def test_chat_prompt_with_text_responses_becomes_assistant_turns(here):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Spell 7:"}]
    rows = [{"conv": turns, "good": "seven", "bad": "It is the number seven, spelled s-e-v-e-n."}]
    (pair,) = pairs(rows, {"messages": "conv", "chosen": "good", "rejected": "bad"})
    assert pair["prompt"] == turns
    assert pair["chosen"] == [{"role": "assistant", "content": "seven"}]
    assert pair["rejected"][0]["role"] == "assistant"


def test_implicit_texts_split_at_the_last_shared_space(here):
    rows = [{"c": "Spell 45: four five", "r": "Spell 45: forty-five"}]
    (pair,) = pairs(rows, {"chosen": "c", "rejected": "r"})
    assert pair == {"prompt": "Spell 45: ", "chosen": "four five", "rejected": "forty-five"}


def test_implicit_conversations_share_their_turns_up_to_the_answer(here):
    user = {"role": "user", "content": "Spell 3:"}
    rows = [
        {
            "c": [user, {"role": "assistant", "content": "three"}],
            "r": [user, {"role": "assistant", "content": "3"}],
        }
    ]
    (pair,) = pairs(rows, {"chosen": "c", "rejected": "r"})
    assert pair["prompt"] == [user]
    assert pair["chosen"] == [{"role": "assistant", "content": "three"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "3"}]


def test_pairs_of_one_prompt_share_a_split(here):
    rows = [{"q": f"Spell {i // 3}:", "good": f"answer {i}", "bad": f"wrong {i}"} for i in range(60)]
    source = {"path": jsonl("data/pairs.jsonl", rows), "fields": EXPLICIT}
    records, _ = prepare([source], validation_fraction=0.5)
    splits = {}
    for record in records:
        splits.setdefault(record["prompt"], set()).add(record["split"])
    assert all(len(s) == 1 for s in splits.values()), splits
    assert {next(iter(s)) for s in splits.values()} == {"train", "validation"}


def test_duplicate_pairs_are_dropped_and_counted(here):
    rows = [{"q": "Spell 1:", "good": "one", "bad": "won"}] * 2 + [
        {"q": "Spell 1:", "good": "one", "bad": "1"}
    ]
    assert len(pairs(rows, EXPLICIT)) == 2  # the same prompt with another rejected answer is kept


@pytest.mark.parametrize(
    ("fields", "row", "expect", "reason"),
    [
        (EXPLICIT, {"q": "Spell 1:", "good": "one", "bad": "one"}, "are the same response", "identical_pair"),
        (
            {"chosen": "c", "rejected": "r"},
            {"c": "one", "r": "two"},
            "share no prompt (no common beginning up to a space); map the prompt with fields.prompt",
            "no_shared_prompt",
        ),
        (
            EXPLICIT,
            {"q": "Spell 1:", "good": "one", "bad": [{"role": "assistant", "content": "1"}]},
            "'chosen' and 'rejected' must both be texts or both lists of turns",
            "wrong_type",
        ),
        (
            {"messages": "m", "chosen": "c", "rejected": "r"},
            {
                "m": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                "c": "a",
                "r": "b",
            },
            "the prompt's last turn must not be the assistant's",
            "wrong_type",
        ),
        (EXPLICIT, {"q": "Spell 1:", "good": "one"}, "missing field 'bad'", "missing_field"),
    ],
)
def test_a_bad_pair_is_named_or_skipped_and_counted(here, fields, row, expect, reason):
    good = {"q": "Spell 2:", "good": "two", "bad": "too"} if "q" in fields.values() else None
    rows = [row] + ([good] if good else [])
    source = {"path": jsonl("data/pairs.jsonl", rows), "fields": fields}
    with pytest.raises(SystemExit):
        prepare([source])
    source["on_error"] = "skip"
    records, manifest = prepare([source])
    assert manifest["counts"]["records_bad"] == {reason: 1}, manifest["counts"]
    assert expect in json.dumps(manifest["details"]["bad_examples"])
    assert len(records) == (1 if good else 0)


# --- tokenized pairs -----------------------------------------------------------------------------


def test_a_pair_tokenizes_as_prompt_plus_chosen_with_the_rejected_ids_beside(tmp_path, model_dir):
    from scripts.common.chat import load_tokenizer_files

    pair = {
        "id": "d" * 16,
        "split": "train",
        "prompt": "Spell 12:",
        "chosen": " one two",
        "rejected": " twelve",
    }
    (row,) = tokenize(tmp_path, model_dir, [pair])
    tok = load_tokenizer_files(model_dir)
    eos = tok.ids["eos_token"]
    prompt, chosen, rejected = (
        tok.encode([t], flag)[0]
        for t, flag in ((pair["prompt"], True), (" one two", False), (" twelve", False))
    )
    assert row["input_ids"] == prompt + chosen + [eos]
    assert row["labels"] == [-100] * len(prompt) + chosen + [eos]
    assert row["prompt_length"] == len(prompt) and row["reference"] == " one two"
    assert row["rejected_ids"] == rejected + [eos]


def test_a_chat_pair_renders_the_template_once_per_side(tmp_path, model_dir):
    prompt = CHAT[:4]
    pair = {
        "id": "e" * 16,
        "split": "validation",
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "three"}],
        "rejected": [{"role": "assistant", "content": "3"}],
    }
    (row,) = tokenize(tmp_path, model_dir, [pair])
    plain = {"id": "f" * 16, "split": "validation", "messages": prompt + pair["chosen"]}
    wrong = {**plain, "id": "0" * 16, "messages": prompt + pair["rejected"]}
    (tmp_path / "sft").mkdir()
    other, sft = tokenize(tmp_path / "sft", model_dir, [wrong, plain])  # rows in input order
    assert row["input_ids"] == sft["input_ids"] and row["labels"] == sft["labels"]
    assert row["rejected_ids"] == other["input_ids"][other["prompt_length"] :]
    assert row["rejected_ids"] != row["input_ids"][row["prompt_length"] :]


def test_the_audit_checks_that_the_rejected_answer_ends_too(tmp_path, model_dir):
    pair = {
        "id": "d" * 16,
        "split": "train",
        "prompt": "Spell 12:",
        "chosen": " one two",
        "rejected": " twelve",
    }
    tokenize(tmp_path, model_dir, [pair])
    audit = json.loads((tmp_path / "tokens.manifest.json").read_text())["details"]["audit"]
    assert audit["failed"] == {}
    tokenize(tmp_path, model_dir, [pair], add_eos=False)
    audit = json.loads((tmp_path / "tokens.manifest.json").read_text())["details"]["audit"]
    assert audit["failed"] == {"no_eos_at_turn_end": 1, "rejected_without_eos": 1}
    assert audit["failed_ids"]["rejected_without_eos"] == ["d" * 16]
