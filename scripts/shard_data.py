"""Read the data sources, map their fields, and bucket records into content-named shards.

The checkpoint of the data steps: writes `<shard-dir>/<sha>.jsonl` only for shards whose
content is new (so unchanged shards keep their timestamps and are not rebuilt downstream)
and a manifest listing the current shards.

    python -m scripts.shard_data --spec-json "$(cat data.json)" \
        --shard-dir results/data/KEY/raw --manifest results/data/KEY/shards.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from scripts.common.files import atomic_write_text, jsonl_text
from scripts.common.manifest import fail, write_manifest
from scripts.common.records import (
    SourceError,
    bucket,
    iter_rows,
    map_fields,
    normalize_record,
    record_id,
    source_format,
)
from scripts.common.spec import SpecError, check_slice


def read_source(source: dict, index: int, collapse: bool, bad: Counter, examples: dict):
    """Yield (id, stored record) for every good row; count or raise on bad ones."""
    fmt = source_format(source["path"], source["format"])
    for where, row in iter_rows(source["path"], fmt):
        try:
            if isinstance(row, SourceError):
                raise row
            record = map_fields(row, source["fields"], where)
        except SourceError as exc:
            if source["on_error"] == "fail":
                raise
            reason = "malformed" if "malformed" in str(exc) else "bad_record"
            bad[reason] += 1
            examples.setdefault(reason, [])
            if len(examples[reason]) < 3:
                examples[reason].append(str(exc))
            continue
        yield record_id(normalize_record(record, collapse)), {"source": index, **record}


def assign_shards(data: dict, bad: Counter, examples: dict):
    """Group every record into its hash bucket; returns (buckets, per-source counts)."""
    buckets = defaultdict(list)
    sources = []
    for index, source in enumerate(data["sources"]):
        before = sum(bad.values())
        count = 0
        for rid, record in read_source(source, index, data["clean"]["normalize_whitespace"], bad, examples):
            buckets[bucket(rid, data["num_shards"])].append({"id": rid, **record})
            count += 1
        sources.append({"path": source["path"], "records": count, "bad": sum(bad.values()) - before})
    return buckets, sources


def shard_texts(buckets: dict) -> list[tuple[str, str, int]]:
    """(content hash, JSONL text, record count) per non-empty bucket, records in id order."""
    out = []
    for index in sorted(buckets):
        records = sorted(buckets[index], key=lambda r: (r["id"], json.dumps(r, sort_keys=True)))
        text = jsonl_text(records)
        out.append((hashlib.sha256(text.encode()).hexdigest()[:16], text, len(records)))
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the data section as JSON")
    parser.add_argument("--shard-dir", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        data = check_slice("data", json.loads(args.spec_json))
        bad, examples = Counter(), {}
        buckets, sources = assign_shards(data, bad, examples)
    except (SpecError, SourceError) as exc:
        fail(str(exc))
    shard_dir = Path(args.shard_dir)
    shards, written = [], 0
    for digest, text, count in shard_texts(buckets):
        path = shard_dir / f"{digest}.jsonl"
        if not path.exists():  # content-named: an existing file already holds these bytes
            atomic_write_text(path, text)
            written += 1
        shards.append({"hash": digest, "records": count, "path": str(path)})
    for source in sources:
        from scripts.common.files import sha256_file

        source["sha256"] = sha256_file(source["path"])
    write_manifest(
        args.manifest,
        "shard_data",
        data,
        inputs=[s["path"] for s in data["sources"]],
        counts={
            "records_read": sum(s["records"] for s in sources),
            "records_bad": dict(bad),
            "shards": len(shards),
            "shards_written": written,
        },
        details={"shards": shards, "sources": sources, "bad_examples": examples},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"{len(shards)} shards, {written} new", file=sys.stderr)


if __name__ == "__main__":
    main()
