"""Token rows reused from the previous version of a shard (used by tokenize_shard).

After an edit, shard_data names, for each shard it rewrote, the shard that bucket held before
(`<data>/cache/previous.json`: new hash -> old hash) and keeps the old raw shard
(`<data>/cache/previous/<old>.jsonl`). A kept record whose raw line is in the old shard, and
which has a row in the old token shard of the same tokens key (same data, tokenize section and
tokenizer), gets that row back instead of being tokenized again; the others are tokenized as
usual. The table is the one a full tokenization writes, row for row: rows that
might have been truncated (at max_length, overlong: truncate) and records the old run dropped
are tokenized again, so the counts are those of the new records.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path


def previous_files(previous_map: str | None, records_path: str, tokens_path: str):
    """(old raw shard, old token shard) of this shard, or None when there is none."""
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


def line_id(line: str) -> str | None:
    """The id of a stored line (shard_data writes it first: '{"id": "<16 hex>", ...')."""
    return line[8:24] if line.startswith('{"id": "') else None


def reuse_plan(lines: list[str], old_records: Path, old_tokens: Path, tok: dict):
    """(old table, per line its old row or -1). A line gets its old row back, unparsed, when it
    is a line of the old shard and its id is on no other line of either shard (so that row was
    built from this very line, and cleaning kept it); rows that may have been truncated are
    built again. Lines with -1 are cleaned and tokenized as usual."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with open(old_records, encoding="utf-8") as handle:
        old_lines = [line for line in handle.read().splitlines() if line.strip()]
    table = pq.read_table(old_tokens)
    rows = {rid: i for i, rid in enumerate(table.column("id").to_pylist())}
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy()
    ids = [line_id(line) for line in lines]
    new_count, old_count = Counter(ids), Counter(map(line_id, old_lines))
    old_set = set(old_lines)
    may_be_cut = tok["overlong"] == "truncate"
    plan = []
    for line, rid in zip(lines, ids):
        alone = rid is not None and new_count[rid] == 1 and old_count[rid] == 1
        row = rows.get(rid, -1) if alone and line in old_set else -1
        if row >= 0 and may_be_cut and lengths[row] >= tok["max_length"]:
            row = -1
        plan.append(row)
    return table, plan


def merge_rows(old, new, plan: list[int], fresh_at: list[int], records: list[dict], new_ids: list[str]):
    """The shard's table in line order: the old row where the plan reuses one, else the new
    table's row of the line's record (`fresh_at`: the line of each record tokenized anew;
    `new_ids`: the new table's ids, those records minus any the tokenization dropped)."""
    import pyarrow as pa

    if old.column_names != new.column_names:
        return None
    old = old.cast(new.schema)
    new_row = {}
    at = 0
    for line, record in zip(fresh_at, records):
        if at < len(new_ids) and new_ids[at] == record["id"]:
            new_row[line] = len(old) + at
            at += 1
    order = [row if row >= 0 else new_row.get(line, -1) for line, row in enumerate(plan)]
    both = pa.concat_tables([old, new])
    return both.take(pa.array([i for i in order if i >= 0], pa.int64())).combine_chunks()


SHARD_FILE = re.compile(r"([0-9a-f]{16})\.(?:parquet|manifest\.json)")


def remove_stale_tokens(records_path: str, tokens_path: str, previous_map: str | None) -> int:
    """Delete the token shards (and their manifests) beside `tokens_path` that the current build
    no longer names: their raw shard is gone from the raw folder (shard_data removes the ones
    its manifest does not list), and no shard of this build reuses their rows (the old shards
    of previous.json stay until the next edit). Only shard-named files, and only where the
    input is a shard of the workflow's layout; returns how many files were removed."""
    raw = Path(records_path)
    if not re.fullmatch(r"[0-9a-f]{16}", raw.name.split(".")[0]):
        return 0
    keep = {path.name.split(".")[0] for path in raw.parent.glob("*.jsonl")}
    if previous_map and Path(previous_map).is_file():
        try:
            keep |= set(json.loads(Path(previous_map).read_text(encoding="utf-8")).values())
        except ValueError:
            return 0  # unreadable: keep everything rather than guess
    removed = 0
    for path in Path(tokens_path).parent.iterdir():
        match = SHARD_FILE.fullmatch(path.name)
        if match and match[1] not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
