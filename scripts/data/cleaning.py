"""Cleaning a shard's records (used by tokenize_shard, which cleans the raw shard it reads):
drop empty, too short and too long records and duplicates, counted by reason, and give each kept
record its split; and (used by shard_data, which sees every shard) the check that the split
leaves a validation record at all.

Records arrive normalised (shard_data normalises before hashing, so the shard of a record is the
hash of exactly what is kept). Duplicates share an id, so they share a shard: a shard holds its
records sorted by id, and dedupe keeps the first line of each id.
"""

from __future__ import annotations

import json
from collections import Counter

from scripts.data.records import record_texts, split_of

REASONS = ("empty", "too_short", "too_long", "duplicate")
EXAMPLES = 3  # dropped records kept as examples per reason, each cut to 200 characters


def drop_reason(record: dict, clean: dict, seen: set) -> str | None:
    """Why a normalised record is dropped, or None to keep it."""
    texts = record_texts(record)
    if not texts or any(not text for text in texts):
        return "empty"
    chars = sum(map(len, texts))
    if chars < clean["min_chars"]:
        return "too_short"
    if clean["max_chars"] is not None and chars > clean["max_chars"]:
        return "too_long"
    if clean["dedupe"] and record["id"] in seen:
        return "duplicate"
    return None


def clean_records(raw: list[dict], data: dict):
    """(indices of the kept records in `raw`, the kept records with their split, drop counts,
    up to EXAMPLES dropped records per reason)."""
    clean = data["clean"]
    kept_at, kept, dropped, examples, seen = [], [], Counter(), {}, set()
    for index, row in enumerate(raw):
        reason = drop_reason(row, clean, seen)
        if reason:
            dropped[reason] += 1
            if len(examples.setdefault(reason, [])) < EXAMPLES:
                examples[reason].append(json.dumps(row, ensure_ascii=False)[:200])
            continue
        seen.add(row["id"])
        record = {k: v for k, v in row.items() if k not in ("source", "group", "split")}
        kept_at.append(index)
        kept.append({**record, "split": split_of(row, data)})
    return kept_at, kept, dropped, examples


def _where(source: dict) -> str:
    return source.get("path") or f"hub {(source.get('hub') or {}).get('repo')}"


def empty_validation_error(shards: list[dict], data: dict) -> str | None:
    """Why the validation split would be empty (evaluation, part of every export, fails on it
    after training), or None. `shards`: shard_data's entries (path, records). Reads records
    until one falls in validation (about 1 / validation_fraction of them), so only an empty
    split reads them all. A validation fraction of 0 is the spec's rule (spec_rules.py): the
    data step alone may run without a split."""
    auto = [i for i, source in enumerate(data["sources"]) if source["split"] == "auto"]
    if any(source["split"] == "validation" for source in data["sources"]):
        return None
    if not auto or data["validation_fraction"] == 0:
        return None
    total = 0
    for shard in shards:
        total += shard["records"]
        with open(shard["path"], encoding="utf-8") as f:
            if any(split_of(json.loads(line), data) == "validation" for line in f if line.strip()):
                return None
    if total == 0:
        return None  # no records at all: the sources' own errors say so
    named = ", ".join(f"data.sources[{i}] ({_where(data['sources'][i])})" for i in auto)
    return (
        f"data.validation_fraction: {data['validation_fraction']} of {total} record(s) from {named} "
        f"puts none in the validation split (records are split by hash, data.split_seed "
        f"{data['split_seed']}), and evaluation (part of every export) would fail after training; "
        "add records, raise data.validation_fraction, change data.split_seed, or add a source with "
        "split: validation"
    )
