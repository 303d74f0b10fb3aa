"""Sources and record shapes: every format in, every shape mapped, every bad input named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scripts.compiler.spec import SpecError, check_slice, load_spec_file
from scripts.data.records import collapse_spaces, normalize_text
from tests.records_fixtures import prepare, write

PC = {"prompt": "prompt", "completion": "completion"}


def test_jsonl_prompt_completion(here):
    write("d.jsonl", '{"p": "Spell  1:\\n", "c": " one"}\n\n{"p": "Spell 2:", "c": "two"}\n')
    records, manifest = prepare([{"path": "d.jsonl", "fields": {"prompt": "p", "completion": "c"}}])
    pairs = {(r["prompt"], r["completion"]) for r in records}
    assert pairs == {("Spell  1:\n", " one"), ("Spell 2:", "two")}  # stored as the source writes it
    assert manifest["counts"]["records_read"] == 2
    assert all(r["split"] == "train" for r in records)


def test_json_array_alpaca_with_and_without_input(here):
    fields = {"instruction": "instruction", "input": "input", "output": "output"}
    records, _ = prepare([{"path": "data/alpaca.json", "fields": fields}])
    by_output = {r["completion"]: r["prompt"] for r in records}
    assert by_output["seven two"].endswith(  # the standard alpaca prompt, its newline included
        "### Instruction:\nSpell the number.\n\n### Input:\n72\n\n### Response:\n"
    )
    assert by_output["hello"].endswith("### Instruction:\nSay hello.\n\n### Response:\n")
    assert "### Input:" not in by_output["hello"]
    assert "paired with an input" in by_output["seven two"] and "paired" not in by_output["hello"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("d.jsonl", '{"q": "Spell 1:", "a": "one"}\n{"q": "Spell 2:", "a": "two"}\n'),
        ("d.json", '[{"q": "Spell 1:", "a": "one"}, {"q": "Spell 2:", "a": "two"}]'),
        ("d.csv", "q,a\nSpell 1:,one\nSpell 2:,two\n"),
        ("d.tsv", "q\ta\nSpell 1:\tone\nSpell 2:\ttwo\n"),
    ],
)
def test_every_text_format_reads_the_same_with_a_byte_order_mark(here, name, text):
    source = {"path": name, "fields": {"prompt": "q", "completion": "a"}}
    write(name, text)
    plain, _ = prepare([source])
    write(name, b"\xef\xbb\xbf" + text.encode())
    marked, manifest = prepare([source])
    assert len(plain) == 2 and marked == plain and manifest["counts"]["records_bad"] == {}


def test_tsv_keeps_numbers_as_text_and_csv_quotes(here):
    records, _ = prepare(
        [{"path": "data/pairs.tsv", "fields": {"prompt": "question", "completion": "answer"}}]
    )
    assert {r["completion"] for r in records} == {"five", "68"}
    records, _ = prepare([{"path": "data/text.csv", "fields": {"text": "body"}}])
    assert {r["text"] for r in records} == {"a line, with a comma", "plain text"}


def test_parquet_and_save_to_disk_folder(here):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": f"Spell {i}:", "a": str(i)} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), "rows.parquet")
    datasets.Dataset.from_list(rows).save_to_disk("saved")
    fields = {"prompt": "q", "completion": "a"}
    from_parquet, _ = prepare([{"path": "rows.parquet", "fields": fields}])
    from_folder, _ = prepare([{"path": "saved", "fields": fields}])
    assert len(from_parquet) == 5 and from_parquet == from_folder


def test_sharegpt_multi_turn_with_roles_mapped_and_system_added(here):
    source = {
        "path": "data/chat_sharegpt.jsonl",
        "fields": {"messages": "conversations"},
        "chat": {"role_key": "from", "content_key": "value", "system": "You spell numbers."},
    }
    records, _ = prepare([source])
    chats = sorted((r["messages"] for r in records), key=len)
    assert chats[0] == [
        {"role": "system", "content": "Be brief."},  # has its own: the default is not added
        {"role": "user", "content": "Spell 40:"},
        {"role": "assistant", "content": "four zero"},
    ]
    assert [m["role"] for m in chats[1]] == ["system", "user", "assistant", "user", "assistant"]
    assert chats[1][0]["content"] == "You spell numbers."


def test_several_sources_weight_sample_and_explicit_validation(here):
    write("a.jsonl", "".join(json.dumps({"t": f"record {i}"}) + "\n" for i in range(40)))
    write("v.jsonl", '{"t": "held out"}\n')
    sources = [
        {"path": "a.jsonl", "fields": {"text": "t"}, "sample": 10, "weight": 2},
        {"path": "v.jsonl", "fields": {"text": "t"}, "split": "validation"},
    ]
    records, _ = prepare(sources)
    assert len(records) == 21
    assert [r["text"] for r in records if r["split"] == "validation"] == ["held out"]
    again, _ = prepare(sources)
    assert again == records  # sampling is by hash: stable


def test_cleaning_counts_every_drop_by_reason(here, capsys):
    lines = ["ok record", "ok  record", "", " \t\n ", "x", "y" * 50, "caf\u0065\u0301 \x07bell"]
    write("d.jsonl", "".join(json.dumps({"t": t}) + "\n" for t in lines))
    records, manifest = prepare(
        [{"path": "d.jsonl", "fields": {"text": "t"}}], clean={"min_chars": 2, "max_chars": 20}
    )
    texts = sorted(r["text"] for r in records)  # spacing variants are duplicates: one is kept
    assert texts == ["café bell", "ok  record"]
    assert manifest["cleaning_dropped"] == {"duplicate": 1, "empty": 2, "too_short": 1, "too_long": 1}


def test_normalisation():
    assert normalize_text("  a \t b\r\nc\u00a0 d  ") == "  a \t b\nc\u00a0 d  "
    assert collapse_spaces(normalize_text("  a \t b\r\nc\u00a0 d  ")) == "a b\nc d"
    assert normalize_text("e\u0301") == "\u00e9"


BAD = [
    (
        "d.jsonl",
        b'{"p": "a", "c": "b"}\n{"p": "a", "c": \n',
        PC | {"prompt": "p", "completion": "c"},
        "d.jsonl:2: malformed JSON: Expecting value at column 17",
        "malformed_json",
    ),
    (
        "d.jsonl",
        b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "tr',
        PC,
        "d.jsonl:2: malformed JSON: Unterminated string starting at column 31",
        "malformed_json",
    ),
    (
        "d.jsonl",
        b'{"prompt": "a", "complete": "b"}\n',
        PC,
        "d.jsonl:1: missing field 'completion'; the record has prompt, complete; did you mean 'complete'?",
        "missing_field",
    ),
    (
        "d.jsonl",
        b'{"prompt": "a", "completion": ["b"]}\n',
        PC,
        "d.jsonl:1: field 'completion' must be a string, got list",
        "wrong_type",
    ),
    (  # Python's json reads NaN (not JSON) as a float, which used to become the text "nan"
        "d.jsonl",
        b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": NaN}\n',
        PC,
        "d.jsonl:2: field 'completion' must be a string, got NaN (not a finite number); "
        'write "NaN" in quotes if it is the text to train on',
        "wrong_type",
    ),
    (
        "d.json",
        b'[{"m": [{"role": "user", "content": "a"}, {"role": "assistant", "content": -Infinity}]}]',
        {"messages": "m"},
        "d.json[0]: m[1]: field 'content' must be a string, got -Infinity (not a finite number)",
        "wrong_type",
    ),
    (
        "d.jsonl",
        b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n',
        PC,
        "d.jsonl:2: invalid UTF-8 at byte offset 47; re-encode the file as UTF-8",
        "invalid_utf8",
    ),
    ("d.jsonl", b"", PC, "d.jsonl: the file is empty", "empty_file"),
    (
        "d.csv",
        b"prompt,completion\na,b\na,b,c\n",
        PC,
        "d.csv:3: row has 3 columns, the header has 2 (prompt, completion)",
        "ragged_row",
    ),
    (
        "d.jsonl",
        b'{"m": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}\n',
        {"messages": "m"},
        "d.jsonl:1: m[1]: unknown chat role 'tool'; known roles: system, user, assistant, human, gpt",
        "unknown_role",
    ),
]


@pytest.mark.parametrize(("name", "content", "fields", "message", "reason"), BAD, ids=[b[4] for b in BAD])
def test_bad_input_fails_with_a_clear_message_or_is_skipped_and_counted(
    here, capsys, name, content, fields, message, reason
):
    write(name, content)
    good = write("good.jsonl", '{"prompt": "fine", "completion": "yes"}\n')
    with pytest.raises(SystemExit) as exit_info:
        prepare([{"path": name, "fields": fields}, {"path": good, "fields": PC}])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and message in err and "Traceback" not in err
    assert not Path("shards.json").exists()  # nothing complete-looking
    records, manifest = prepare(
        [{"path": name, "fields": fields, "on_error": "skip"}, {"path": good, "fields": PC}]
    )
    assert manifest["counts"]["records_bad"] == {reason: 1}
    assert message in manifest["details"]["bad_examples"][reason][0]
    kept = [r.get("completion") for r in records]
    assert "yes" in kept and set(kept) <= {"yes", "b"}  # good rows of the bad file stay


def test_spec_rejects_a_field_mix_and_accepts_each_shape(tmp_path):
    with pytest.raises(SpecError, match="map either text, or prompt and completion, or instruction"):
        check_slice("data", {"sources": [{"path": "a.jsonl", "fields": {"text": "a", "prompt": "b"}}]})
    for fields in (
        {"text": "t"},
        {"prompt": "p", "completion": "c"},
        {"instruction": "i", "output": "o"},
        {"messages": "m"},
    ):
        check_slice("data", {"sources": [{"path": "a.jsonl", "fields": fields}]})
    spec = (
        Path("specs/demo.yaml")
        .read_text()
        .replace(
            "fields: {prompt: prompt, completion: completion}",
            "fields: {prompt: prompt, completion: completion}\n      formt: jsonl",
        )
    )
    path = tmp_path / "exp.yaml"
    path.write_text(spec)
    with pytest.raises(SpecError, match="did you mean 'format'"):
        load_spec_file(path)


def test_chunks_cached_by_an_older_reader_are_read_again(here):
    """A chunk cached before NaN was refused (its record stored with the text "nan") is not
    reused: the reader's version is part of the cache name (fails with the pre-version name)."""
    from scripts.compiler.spec import canonical_json
    from scripts.data.records import normalize_record, record_id
    from scripts.data.sharding import record_line

    chunk = b'{"prompt": "a", "completion": NaN}\n'
    write("d.jsonl", chunk)
    source = {"path": "d.jsonl", "fields": PC, "on_error": "skip"}
    data = check_slice("data", {"sources": [source], "num_shards": 2, "validation_fraction": 0.0})
    old_name = hashlib.sha256(f"{canonical_json(data)}:0:".encode() + chunk).hexdigest()[:32]
    old = normalize_record({"prompt": "a", "completion": "nan"})
    lines = [record_line(record_id(old), {"source": 0, **old})]
    write(f"cache/{old_name}.json", json.dumps({"lines": lines, "bad": {}, "examples": {}, "first_line": 1}))
    records, manifest = prepare([source])
    assert records == [] and manifest["counts"]["records_bad"] == {"wrong_type": 1}
