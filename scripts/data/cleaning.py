"""Cleaning a shard's records (used by tokenize_shard, which cleans the raw shard it reads):
drop empty, too short and too long records and duplicates, counted by reason, and give each kept
record its split.

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
