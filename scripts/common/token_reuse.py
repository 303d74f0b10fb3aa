"""Token rows reused from the previous version of a shard (used by tokenize_shard).

After an edit, shard_data names, for each shard it rewrote, the shard that bucket held before
(`<data>/cache/previous.json`: new hash -> old hash) and keeps the old cleaned shard
(`<data>/cache/previous/<old>.jsonl`). A record whose cleaned line is in the old cleaned shard, and which has a row in the old token shard of the same tokens key (same tokenize
section, same tokenizer), gets that row back instead of being tokenized again; the others are
tokenized as usual. The table is the one a full tokenization writes, row for row: rows that
might have been truncated (at max_length, overlong: truncate) and records the old run dropped
are tokenized again, so the counts are those of the new records.
"""

from __future__ import annotations

import json
from pathlib import Path


def previous_files(previous_map: str | None, records_path: str, tokens_path: str):
    """(old cleaned shard, old token shard) of this shard, or None when there is none."""
    if not previous_map or not Path(previous_map).is_file():
        return None
    shard = Path(records_path).name.split(".")[0]
    try:
        old = json.loads(Path(previous_map).read_text(encoding="utf-8")).get(shard)
    except ValueError:
        return None
    if not old:
        return None
    records = Path(previous_map).parent / "previous" / f"{old}.jsonl"
    tokens = Path(tokens_path).with_name(f"{old}.parquet")
    return (records, tokens) if records.is_file() and tokens.is_file() else None


def reuse_plan(lines: list[str], records: list[dict], old_records: Path, old_tokens: Path, tok: dict):
    """(old table, per record its old row or -1) for records whose cleaned line is unchanged."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with open(old_records, encoding="utf-8") as handle:
        old_lines = set(handle.read().splitlines())
    table = pq.read_table(old_tokens)
    rows = {rid: i for i, rid in enumerate(table.column("id").to_pylist())}
    lengths = pc.list_value_length(table.column("input_ids")).to_pylist()
    may_be_cut = tok["overlong"] == "truncate"
    plan = []
    for line, record in zip(lines, records):
        row = rows.get(record["id"], -1) if line in old_lines else -1
        if row >= 0 and may_be_cut and lengths[row] >= tok["max_length"]:
            row = -1
        plan.append(row)
    return table, plan


def merge_rows(old, new, plan: list[int], new_ids: list[str], records: list[dict]):
    """The shard's table in record order: old rows where the plan reuses them, else the new
    table's row of that record (absent when the new tokenization dropped it)."""
    import pyarrow as pa

    if old.column_names != new.column_names:
        return None
    old = old.cast(new.schema)
    at = {rid: len(old) + i for i, rid in enumerate(new_ids)}
    order = [row if row >= 0 else at.get(record["id"], -1) for row, record in zip(plan, records)]
    both = pa.concat_tables([old, new])
    return both.take(pa.array([i for i in order if i >= 0], pa.int64())).combine_chunks()
