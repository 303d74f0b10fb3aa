"""The sample a built model's tokenizer trains on: bounded per record and in total (a 10 MB
record without spaces no longer stalls tokenizer training), and unchanged by an edit of a
record outside it (so the model step and every tokenize job stay done)."""

from __future__ import annotations

import json

from scripts.compiler.spec import check_slice
from scripts.data.records import record_id
from scripts.data.sharding import record_line
from scripts.data.tokenizer_sample import SAMPLE_BYTES, SAMPLE_RECORD_CHARS, tokenizer_sample

DATA = check_slice("data", {"sources": [{"path": "x.jsonl", "fields": {"text": "text"}}]})


def buckets_of(texts: list[str]) -> list[list[str]]:
    lines = [record_line(record_id({"text": t}), {"text": t, "source": 0}) for t in texts]
    return [lines[0::2], lines[1::2]]


def sample_records(buckets) -> list[dict]:
    return [json.loads(line) for line in tokenizer_sample(buckets, DATA).splitlines()]


def test_the_sample_is_bounded_per_record_and_in_total():
    texts = ["x" * 10_000_000, *(f"record number {i} " * 20 for i in range(20_000))]
    sample = sample_records(buckets_of(texts))
    assert max(len(r["text"]) for r in sample) <= SAMPLE_RECORD_CHARS
    assert sum(len(json.dumps(r, ensure_ascii=False)) + 1 for r in sample) <= SAMPLE_BYTES
    assert 100 < len(sample) < 20_001  # a prefix of the records by id, not all of them
    ids = [r["id"] for r in sample]
    assert ids == sorted(ids)


def test_an_edit_outside_the_sample_leaves_it_byte_identical():
    texts = [f"record number {i} " * 20 for i in range(20_000)]
    before = tokenizer_sample(buckets_of(texts), DATA)
    kept = {r["id"] for r in map(json.loads, before.splitlines())}
    outside = next(i for i, t in enumerate(texts) if record_id({"text": t}) not in kept)
    edited = [*texts[:outside], texts[outside] + " (edited)", *texts[outside + 1 :]]
    if record_id({"text": edited[outside]}) < max(kept):
        edited[outside] += " again"  # the edited record's new id must fall outside too
    assert record_id({"text": edited[outside]}) > max(kept)
    assert tokenizer_sample(buckets_of(edited), DATA) == before
    inside = texts.index(next(t for t in texts if record_id({"text": t}) == min(kept)))
    changed = [*texts[:inside], texts[inside] + " (edited)", *texts[inside + 1 :]]
    assert tokenizer_sample(buckets_of(changed), DATA) != before  # an edit inside does change it
