"""The fast paths of shard_data give the bytes the plain ones give: chunks found at C speed or
reused from the last run, stored lines built from one JSON encoding per text, whole-chunk
decoding, sha256 of a source computed once per run."""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from pathlib import Path

import pytest

from scripts import shard_data
from scripts.common import files
from scripts.data import sharding
from scripts.data.records import normalize_record, record_id
from scripts.data.sharding import chunk_spans, jsonl_chunks, named_chunks, read_rows, rechunk, record_line
from scripts.data.source_rows import JSONNumber, SourceError, jsonl_rows


def plain_chunks(data: bytes, mask: int):
    """jsonl_chunks as a loop over lines: the definition the fast version keeps."""
    start_line, start_offset, offset, current = 1, 0, 0, []
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        current.append(line)
        offset += len(line) + 1
        if zlib.crc32(line) & mask == 0:
            yield start_line, start_offset, b"\n".join(current)
            start_line, start_offset, current = line_no + 1, offset, []
    if current:
        yield start_line, start_offset, b"\n".join(current)


def random_file(rng: random.Random) -> bytes:
    pool = [b"", b"a", b"{}", b" ", b"q1", b"q2"]
    lines = [
        rng.choice(pool) if rng.random() < 0.5 else b"%d" % rng.randrange(1000)
        for _ in range(rng.randrange(60))
    ]
    return b"\n".join(lines) + rng.choice([b"", b"\n"])


def edited(rng: random.Random, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    for _ in range(rng.choice([0, 1, 1, 2, 4])):
        at = rng.randrange(len(lines) + 1)
        op = rng.choice(["insert", "delete", "change", "append", "truncate", "repeat"])
        if op == "insert":
            lines.insert(at, b"%d" % rng.randrange(1000))
        elif op == "delete" and lines:
            lines.pop(min(at, len(lines) - 1))
        elif op == "change" and lines:
            lines[min(at, len(lines) - 1)] += b"!"
        elif op == "append":
            lines += [b"%d" % rng.randrange(1000) for _ in range(rng.randrange(4))]
        elif op == "truncate":
            lines = lines[:at]
        elif op == "repeat":
            lines += lines[:at]
    return b"\n".join(lines)


def as_bytes(chunks):
    return [(first, offset, bytes(chunk), name) for first, offset, chunk, name in chunks]


def test_chunks_are_those_of_the_line_by_line_definition(monkeypatch):
    rng = random.Random(0)
    monkeypatch.setattr(sharding, "CHUNK_MASK", 0x3)  # many chunks in small files
    for data in [b"", b"\n", b"a", b"a\n", b"\n\n", *(random_file(rng) for _ in range(500))]:
        assert list(jsonl_chunks(data)) == list(plain_chunks(data, 0x3))
    real = b"\n".join(b'{"text": "%d"}' % i for i in range(30000))
    monkeypatch.undo()
    assert list(jsonl_chunks(real)) == list(plain_chunks(real, sharding.CHUNK_MASK))


def test_rechunk_after_any_edit_gives_the_chunks_of_reading_everything(monkeypatch):
    rng = random.Random(1)
    monkeypatch.setattr(sharding, "CHUNK_MASK", 0x7)
    for _ in range(2000):
        before = random_file(rng)
        after = edited(rng, before) if rng.random() < 0.9 else random_file(rng)
        first = rechunk(after, b"s", chunk_spans(named_chunks(before, b"s")))
        assert as_bytes(first) == named_chunks(after, b"s")
        again = edited(rng, after)  # spans taken from a rechunked file
        assert as_bytes(rechunk(again, b"s", chunk_spans(first))) == named_chunks(again, b"s")


def plain_line(record: dict, extra: dict, collapse: bool) -> str:
    normalized = normalize_record(record, collapse)
    return record_line(record_id(normalized), {**extra, **normalized})


TEXTS = [
    "Spell 1:",
    " two  spaces ",
    "tab\there",
    "crlf\r\nline",
    "é e\u0301",
    "ctl\x01\x7f",
    "%s %d 100%",
    "",
]
TEXTS += ['quote " and \\ slash', "\u2028 line sep", "emoji \U0001f600", "nbsp\u00a0\u00a0x", "end \n"]


@pytest.mark.parametrize("collapse", [True, False])
@pytest.mark.parametrize("split", ["auto", "validation"])
def test_stored_lines_are_the_bytes_of_normalise_then_encode(collapse, split):
    rng = random.Random(2)
    fields = {"prompt": "p", "completion": "c"}
    source = {"fields": fields, "split": split, "on_error": "skip", "path": "x.jsonl"}
    rows = [{"p": rng.choice(TEXTS) + rng.choice(TEXTS), "c": rng.choice(TEXTS)} for _ in range(300)]
    rows += [{"p": JSONNumber("2.50"), "c": "x"}, {"p": 7, "c": "y"}, {"c": "no prompt"}, ["a list"]]
    result = read_rows(((f"x.jsonl:{i}", row) for i, row in enumerate(rows, 1)), source, 3, collapse)
    extra = {"source": 3} | ({"split": split} if split != "auto" else {})
    want = [plain_line({"prompt": str(r["p"]), "completion": r["c"]}, extra, collapse) for r in rows[:-2]]
    assert result["lines"] == want
    assert result["bad"] == {"missing_field": 1, "wrong_type": 1}
    assert result["examples"]["wrong_type"] == ["x.jsonl:304: expected an object, got list"]


def test_text_and_alpaca_sources_keep_their_lines():
    text = {"fields": {"text": "t"}, "split": "auto", "on_error": "fail", "path": "x"}
    rows = [("x:1", {"t": "a  b"}), ("x:2", {"t": "a b", "other": 1})]
    assert read_rows(rows, text, 0, True)["lines"] == [
        plain_line({"text": t}, {"source": 0}, True) for t in ("a  b", "a b")
    ]
    alpaca = {"fields": {"instruction": "i", "output": "o"}, "split": "auto", "on_error": "fail", "path": "x"}
    line = read_rows([("x:1", {"i": "Spell 1.", "o": "one"})], alpaca, 0, True)["lines"][0]
    assert json.loads(line)["completion"] == "one" and json.loads(line)["prompt"].endswith("### Response:\n")


def test_whole_chunk_decoding_reads_as_line_by_line():
    data = b'\xef\xbb\xbf{"a": "1"}\n \x0b\n{"a": 2.50}\r\n{"a": NaN}\n{bad\n  {"a": "x"}  \n[1, 2]\n'
    rows = list(jsonl_rows("d.jsonl", data))
    assert [where for where, _ in rows] == [
        "d.jsonl:1",
        "d.jsonl:3",
        "d.jsonl:4",
        "d.jsonl:5",
        "d.jsonl:6",
        "d.jsonl:7",
    ]
    assert rows[1][1] == {"a": "2.50"} and rows[4][1] == {"a": "x"} and rows[5][1] == ["1", "2"]
    assert (
        str(rows[3][1])
        == "d.jsonl:5: malformed JSON: Expecting property name enclosed in double quotes at column 2"
    )
    bad = list(jsonl_rows("d.jsonl", b'{"a": "1"}\n{"a": "\xff"}\n', 10, 100))
    assert bad[0] == ("d.jsonl:10", {"a": "1"}) and isinstance(bad[1][1], SourceError)
    assert str(bad[1][1]) == "d.jsonl:11: invalid UTF-8 at byte offset 118; re-encode the file as UTF-8"


def test_a_source_read_once_is_hashed_once_and_again_when_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"one\n")
    with files.hashes_remembered():
        assert files.read_and_hash(path, len) == 4
        with monkeypatch.context() as patched:
            patched.setattr(files, "open", None, raising=False)  # answered without reading the file
            assert files.sha256_file(path) == hashlib.sha256(b"one\n").hexdigest()
        path.write_bytes(b"two, longer\n")
        assert files.sha256_file(path) == hashlib.sha256(b"two, longer\n").hexdigest()
    files.read_and_hash(path, len)  # outside a run, nothing is remembered
    path.write_bytes(b"three, same\n")
    assert files.sha256_file(path) == hashlib.sha256(b"three, same\n").hexdigest()


def run_shard_data(spec: dict, out: str, cache: bool) -> dict:
    shard_data.main(
        ["--spec-json", json.dumps(spec), "--shard-dir", f"{out}/raw", "--manifest", f"{out}/m.json"]
        + ["--tokenizer-sample", f"{out}/sample.jsonl"]
        + (["--cache-dir", f"{out}/cache"] if cache else [])
    )
    return {p.name: p.read_bytes() for p in sorted(Path(out).glob("*/*.jsonl")) if p.parent.name == "raw"} | {
        "sample": Path(f"{out}/sample.jsonl").read_bytes()
    }


def test_edits_rerun_with_reused_chunks_give_the_shards_of_a_fresh_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sharding, "CHUNK_MASK", 0x7)  # many chunks, so edits reuse most of them
    rng = random.Random(3)
    lines = [json.dumps({"text": f"record {i}" + ("\u2028x" if i % 7 == 0 else "")}) for i in range(300)]
    spec = {"sources": [{"path": "d.jsonl", "fields": {"text": "text"}}], "num_shards": 4}
    for step in range(4):
        Path("d.jsonl").write_text("\n".join(lines) + "\n")
        assert run_shard_data(spec, "inc", cache=True) == run_shard_data(spec, f"fresh{step}", cache=False)
        source = json.loads(Path("inc/m.json").read_text())["details"]["sources"][0]
        assert step == 0 or 0 < source["chunks_cached"] < source["chunks"]
        lines[rng.randrange(len(lines))] = json.dumps({"text": f"edited {step}"})
        del lines[rng.randrange(len(lines))]
    state = json.loads(Path("inc/cache/state.json").read_text())
    assert len(state["spans"]) == len(state["order"]) and state["chunks"]
