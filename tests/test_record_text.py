"""Record text as stored: prompt formats kept byte for byte, BOMs read, JSON errors worded once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.data.records import (
    collapse_spaces,
    map_fields,
    normalize_record,
    normalize_text,
    record_id,
    record_texts,
)
from scripts.data.source_rows import SourceError, iter_rows

FIXTURES = Path(__file__).parent / "data"
ALPACA_FIELDS = {"instruction": "instruction", "input": "input", "output": "output"}
# The standard alpaca prompts (Stanford Alpaca's PROMPT_DICT), written out: what clients send.
STANDARD_ALPACA = {
    "seven two": (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSpell the number.\n\n### Input:\n72\n\n### Response:\n"
    ),
    "hello": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nSay hello.\n\n### Response:\n"
    ),
}


@pytest.mark.parametrize("collapse", [True, False])
def test_alpaca_prompt_is_stored_exactly_as_the_standard_template(collapse):
    rows = json.loads((FIXTURES / "alpaca.json").read_text())
    source = {"fields": ALPACA_FIELDS}
    records = [normalize_record(map_fields(row, source, "alpaca.json"), collapse) for row in rows]
    assert {r["completion"]: r["prompt"] for r in records} == STANDARD_ALPACA
    assert all(r["prompt"].endswith("### Response:\n") for r in records)


def test_stored_text_keeps_whitespace_and_only_the_key_collapses_it():
    record = {"prompt": "Q:  Spell 1:\n", "completion": " one\n    two\t"}
    stored = normalize_record(record)
    assert stored == record  # trailing newline, leading space, indentation: all kept
    assert stored.key == {"prompt": "Q: Spell 1:", "completion": "one\ntwo"}
    respaced = normalize_record({"prompt": "Q: Spell 1:", "completion": "one\ntwo"})
    assert record_id(stored) == record_id(respaced)  # whitespace variants still dedupe
    assert record_id(normalize_record(record, False)) != record_id(normalize_record(respaced, False))
    chat = normalize_record({"messages": [{"role": "user", "content": "hi \n"}]})
    assert chat["messages"][0]["content"] == "hi \n" and chat.key["messages"][0]["content"] == "hi"


def test_ids_of_normal_records_are_unchanged():
    # Ids from before stored text kept its whitespace: the same records land in the same shards.
    assert record_id(normalize_record({"prompt": "Spell 1:", "completion": "one"})) == "9ee0b43acb774d17"
    assert (
        record_id(normalize_record({"prompt": " Spell  1: \r\n", "completion": "one"})) == "9ee0b43acb774d17"
    )
    assert record_id({"prompt": "Spell 1:", "completion": "one"}) == "9ee0b43acb774d17"


def test_safe_normalisation_still_applies_to_stored_text():
    assert normalize_text("e\u0301\r\nx\x07y  ") == "\u00e9\nxy  "
    assert normalize_text("a\tb  \n") == "a\tb  \n"
    assert collapse_spaces("  a \t b\r\nc\u00a0 d  ".replace("\r\n", "\n")) == "a b\nc d"


def test_whitespace_only_fields_count_as_empty():
    assert record_texts(normalize_record({"prompt": " \n\t", "completion": "one"})) == ["", "one"]
    assert record_texts({"messages": [{"role": "user", "content": "  "}]}) == [""]
    assert record_texts({"text": " a b \n"}) == ["a b"]


BOM_SOURCES = {
    "jsonl": '{"q": "Spell 1:", "a": "one"}\n{"q": "Spell 2:", "a": "two"}\n',
    "json": '[{"q": "Spell 1:", "a": "one"}, {"q": "Spell 2:", "a": "two"}]',
    "csv": "q,a\nSpell 1:,one\nSpell 2:,two\n",
    "tsv": "q\ta\nSpell 1:\tone\nSpell 2:\ttwo\n",
}


@pytest.mark.parametrize("fmt", sorted(BOM_SOURCES))
def test_a_leading_bom_is_not_part_of_the_data(tmp_path, fmt):
    plain, marked = tmp_path / f"plain.{fmt}", tmp_path / f"marked.{fmt}"
    plain.write_text(BOM_SOURCES[fmt], encoding="utf-8")
    marked.write_text(BOM_SOURCES[fmt], encoding="utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = [row for _, row in iter_rows(str(plain), fmt)]
    assert rows == [{"q": "Spell 1:", "a": "one"}, {"q": "Spell 2:", "a": "two"}]
    assert [row for _, row in iter_rows(str(marked), fmt)] == rows


def test_bom_only_file_is_empty_and_byte_offsets_still_count_the_bom(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\xef\xbb\xbf\n")
    with pytest.raises(SourceError, match="the file is empty"):
        list(iter_rows(str(empty), "jsonl"))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xef\xbb\xbfq,a\n\xff,b\n")
    with pytest.raises(SourceError, match=r"invalid UTF-8 at byte offset 7;"):
        list(iter_rows(str(bad), "csv"))


def test_truncated_json_message_names_the_column_once(tmp_path):
    lines = tmp_path / "d.jsonl"
    lines.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "fine", "completion": "ye')
    (_, first), (_, second) = iter_rows(str(lines), "jsonl")
    assert first == {"prompt": "a", "completion": "b"}
    assert str(second) == f"{lines}:2: malformed JSON: Unterminated string starting at column 34"
    array = tmp_path / "d.json"
    array.write_text('[\n{"prompt": "fine", "completion": "ye')
    with pytest.raises(SourceError) as info:
        list(iter_rows(str(array), "json"))
    assert str(info.value) == f"{array}:2: malformed JSON: Unterminated string starting at column 34"
    lines.write_text('{"prompt": "a", "completion": }\n')
    ((_, error),) = iter_rows(str(lines), "jsonl")
    assert str(error) == f"{lines}:1: malformed JSON: Expecting value at column 31"


def _texts(path: Path, fmt: str, column: str = "t") -> list[str]:
    """Each row's text field, or the message of the bad record it is."""
    out = []
    for where, row in iter_rows(str(path), fmt):
        try:
            out.append(map_fields(row, {"fields": {"text": column}}, where)["text"])
        except SourceError as exc:
            out.append(str(exc))
    return out


def test_a_json_number_in_a_text_field_is_its_text_as_written_and_nan_is_refused(tmp_path):
    """The rule: a number where text is expected is taken as the text the file writes (an answer
    like 68; 2.50 stays 2.50, 1e300 stays 1e300; an integer past Python's 4300-digit limit is no
    crash); NaN, Infinity and -Infinity, which Python's json accepts though JSON has no such
    values, and 1e400, which every other JSON reader reads as infinity, are bad records naming
    file, line and field. (Before: "2.5", "inf", a ValueError traceback, "nan", "inf", "-inf";
    then 1e400 was kept as the text "1e400".)"""
    path = tmp_path / "n.jsonl"
    numbers = ["68", "2.50", "1e300", "-1E5", "9" * 5000, "NaN", "Infinity", "-Infinity", '"NaN"', "-1e400"]
    path.write_text("".join(f'{{"t": {n}}}\n' for n in numbers))
    texts = _texts(path, "jsonl")
    assert texts[:5] == ["68", "2.50", "1e300", "-1E5", "9" * 5000]
    assert all(type(t) is str for t in texts)  # plain text, stored and hashed as any other
    assert texts[5] == (
        f"{path}:6: field 't' must be a string, got NaN (not a finite number); "
        'write "NaN" in quotes if it is the text to train on'
    )
    assert texts[6].startswith(f"{path}:7: field 't' must be a string, got Infinity (not a finite")
    assert texts[7].startswith(f"{path}:8: field 't' must be a string, got -Infinity (not a finite")
    assert texts[8] == "NaN"  # quoted: text like any other
    assert texts[9].startswith(f"{path}:10: field 't' must be a string, got -1e400 (not a finite number)")
    array = tmp_path / "n.json"
    array.write_text('[{"t": 7.0}, {"t": NaN}]')
    assert _texts(array, "json") == ["7.0", f"{array}[1]: " + texts[5].split(": ", 1)[1]]


def test_csv_cells_are_text_as_written_and_parquet_nan_is_refused(tmp_path):
    """CSV and TSV cells are never converted: 68, NaN and 1e400 are those characters. Parquet
    numbers are their Python text; a NaN or infinite float (pandas' missing value) is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "n.csv"
    csv_path.write_text("t\n68\nNaN\n1e400\n")
    assert _texts(csv_path, "csv") == ["68", "NaN", "1e400"]
    table = pa.table({"i": [68, 7, 1], "f": [3.5, float("nan"), float("-inf")]})
    pq.write_table(table, tmp_path / "n.parquet")
    assert _texts(tmp_path / "n.parquet", "parquet", "i") == ["68", "7", "1"]
    floats = _texts(tmp_path / "n.parquet", "parquet", "f")
    assert floats[0] == "3.5"
    assert floats[1] == (
        f"{tmp_path}/n.parquet[row 1]: field 'f' must be a string, got the float nan "
        "(not a finite number; a missing value?)"
    )
    assert floats[2].startswith(
        f"{tmp_path}/n.parquet[row 2]: field 'f' must be a string, got the float -inf"
    )
