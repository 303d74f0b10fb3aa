"""Read the data sources, map and normalise their records, and bucket them into content-named shards.

The checkpoint of the data steps: writes `<shard-dir>/<sha>.jsonl` only for shards whose
content is new (so unchanged shards keep their timestamps and are not rebuilt downstream)
and a manifest listing the current shards; removes the raw and cleaned shards it no longer
names, and writes the bounded sample a built model's tokenizer trains on. JSONL sources are read in content-defined chunks
whose results are cached under `--cache-dir`, so a rerun after editing one record parses one
chunk and rebuilds only the shards that chunk's records fall in (scripts/data/shard_state.py).

    python -m scripts.shard_data --spec-json "$(cat data.json)" --shard-dir results/data/KEY/raw \
        --manifest results/data/KEY/raw.manifest.json --cache-dir results/data/KEY/cache
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_text, hashes_remembered, sha256_file
from scripts.common.manifest import write_manifest
from scripts.compiler.hub_sources import HubError, resolve_data, source_paths
from scripts.compiler.spec import SpecError, check_slice
from scripts.data.cleaning import empty_validation_error
from scripts.data.shard_state import applies, forget, incremental_shards, keep_replaced, merged_lines
from scripts.data.sharding import read_all, shard_texts, source_files
from scripts.data.source_rows import SourceError
from scripts.data.tokenizer_sample import tokenizer_sample


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the data section as JSON")
    parser.add_argument("--shard-dir", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--tokenizer-sample", help="JSONL to write: a bounded sample for a built tokenizer")
    parser.add_argument("--cache-dir", help="where chunk results are kept between runs (optional)")
    parser.add_argument("--workers", type=int, default=1, help="processes parsing JSONL chunks")
    parser.add_argument(
        "--hub-json", help="per source, its hub resolution or null (JSON or @file; rules/common.smk hub_json)"
    )
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    with hashes_remembered():  # each source file read and hashed once
        shard_sources(parse_args(argv))


def shard_sources(args):
    start = time.perf_counter()
    cache = Path(args.cache_dir) if args.cache_dir else None
    try:
        data = check_slice("data", json_arg(args.spec_json))
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
        hub = json_arg(args.hub_json) if args.hub_json else resolve_data(data)
        shard_dir = Path(args.shard_dir)
        fast = (
            incremental_shards(data, cache, shard_dir, args.workers) if cache and applies(data, hub) else None
        )
        replaced = set()
        if fast:
            shard_list, sources, bad, examples, save, replaced = fast
        else:
            if cache:
                forget(cache)
            buckets, sources, bad, examples = read_all(data, cache, args.workers, hub)
            shard_list, save = shard_texts(buckets), None
    except HubError as exc:
        fail(f"data.sources[{exc.index}].hub.{exc.key}: {exc}")
    except (SpecError, SourceError) as exc:
        fail(f"{exc}\n(set on_error: skip on the source to drop and count bad records instead)")
    read_s = time.perf_counter() - start
    shards, written = write_shards(shard_dir, shard_list)
    problem = empty_validation_error(shards, data)
    if problem:
        fail(problem)
    files = [source_paths(h) if h else source_files(s["path"]) for s, h in zip(data["sources"], hub)]
    for source, paths in zip(sources, files):
        source["sha256"] = hashlib.sha256("".join(sha256_file(f) for f in paths).encode()).hexdigest()
    if args.tokenizer_sample:
        lines = merged_lines(shard_dir, shard_list) if fast else None
        atomic_write_text(args.tokenizer_sample, tokenizer_sample(None if fast else buckets, data, lines))
    if save:
        save()
    write_manifest(
        args.manifest,
        "shard_data",
        data,
        inputs=[f for paths in files for f in paths],
        counts={
            "records_read": sum(s["records"] for s in sources),
            "records_bad": dict(bad),
            "shards": len(shards),
            "shards_written": written,
        },
        details={"shards": shards, "sources": sources, "bad_examples": examples},
        timings={"read": read_s, "total": time.perf_counter() - start},
        environment=args.environment,
    )
    if cache:
        keep_replaced(cache, shard_dir, replaced)
    removed = remove_stale_shards(shard_dir, {s["hash"] for s in shards})
    print(
        f"{len(shards)} shards, {written} new, {removed} old files removed; bad records {dict(bad)}",
        file=sys.stderr,
    )


def write_shards(shard_dir: Path, shard_list) -> tuple[list[dict], int]:
    """The shard files not on disk yet (content-named: an existing file holds these bytes), and
    the manifest's shard entries; (entries, files written)."""
    shards, written = [], 0
    for digest, text, count in shard_list:
        path = shard_dir / f"{digest}.jsonl"
        if text is not None and not path.exists():
            atomic_write_text(path, text)
            written += 1
        shards.append({"hash": digest, "records": count, "path": str(path)})
    return shards, written


def remove_stale_shards(shard_dir: Path, current: set[str]) -> int:
    """Delete the raw and cleaned shards (and their manifests) that the new manifest no longer
    names: after an edit, an append or a delete they are never read again."""
    removed = 0
    for folder in (shard_dir, shard_dir.parent / "clean"):
        for path in folder.glob("*.*"):
            stem = path.name.split(".")[0]
            if re.fullmatch("[0-9a-f]{16}", stem) and stem not in current:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


if __name__ == "__main__":
    main()
