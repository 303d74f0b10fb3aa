"""Clean one raw shard (drop empty/short/long records and duplicates) and split it.

    python -m scripts.clean_shard --spec-json "$(cat data.json)" --input raw/SHA.jsonl \
        --out clean/SHA.jsonl --manifest clean/SHA.manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_text, jsonl_text, read_jsonl
from scripts.common.manifest import write_manifest
from scripts.common.records import record_texts, split_of
from scripts.common.spec import SpecError, check_slice


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
    """(kept records with their split, drop counts, a few examples per reason).

    Records arrive normalised (shard_data normalises before hashing, so the shard of a record
    is the hash of exactly what is kept); cleaning filters, dedupes and splits."""
    clean = data["clean"]
    kept, dropped, examples, seen = [], Counter(), {}, set()
    for row in raw:
        reason = drop_reason(row, clean, seen)
        if reason:
            dropped[reason] += 1
            if len(examples.setdefault(reason, [])) < 3:
                examples[reason].append(json.dumps(row, ensure_ascii=False)[:200])
            continue
        seen.add(row["id"])
        record = {k: v for k, v in row.items() if k not in ("source", "group", "split")}
        kept.append({**record, "split": split_of(row, data)})
    return kept, dropped, examples


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the data section as JSON")
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        data = check_slice("data", json_arg(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    raw = read_jsonl(args.input)
    kept, dropped, examples = clean_records(raw, data)
    atomic_write_text(args.out, jsonl_text(kept))
    train = sum(r["split"] == "train" for r in kept)
    write_manifest(
        args.manifest,
        "clean_shard",
        data,
        inputs=[args.input],
        outputs=[args.out],
        counts={
            "records_in": len(raw),
            "kept": len(kept),
            "train": train,
            "validation": len(kept) - train,
            "dropped": dict(dropped),
        },
        details={"examples": examples},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"kept {len(kept)} of {len(raw)}; dropped {dict(dropped)}", file=sys.stderr)


if __name__ == "__main__":
    main()
