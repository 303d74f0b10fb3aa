"""Incremental sharding (used by shard_data): after an edit, only the chunks of the source that
changed are parsed and only the shards their records fall in are rebuilt.

`<cache>/state.json` keeps, from the last run, the data slice it was built for, every chunk's
name (sha256 of its bytes) with its counts, and each bucket's shard hash. A rerun chunks the
sources, compares the chunk names, reads the lines of the removed chunks (their cached results)
and of the added ones, and rewrites the buckets those lines fall in from the old shard file:
the same shards, bytes and counts as reading everything, in time that does not grow with the
dataset. Applies to JSONL file sources without `sample` (which picks records across the whole
source); a missing state or file falls back to reading everything.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing
from collections import Counter
from pathlib import Path

from scripts.common.files import atomic_write_text
from scripts.common.records import bucket, source_format
from scripts.common.sharding import EXAMPLES, READER_VERSION, _parse_chunk, jsonl_chunks, resample
from scripts.common.spec import canonical_json

STATE = "state.json"
PREVIOUS = "previous.json"  # shard -> the shard its bucket held before: tokenize_shard reuses its rows


def forget(cache: Path) -> None:
    """Drop the state (a run that read everything does not keep one)."""
    (cache / STATE).unlink(missing_ok=True)
    (cache / PREVIOUS).unlink(missing_ok=True)


def applies(data: dict, hub: list) -> bool:
    for source, resolved in zip(data["sources"], hub):
        if resolved or "path" not in source or source["sample"] is not None:
            return False
        path = Path(source["path"])
        if not path.is_file() or not path.stat().st_size:
            return False
        if source_format(source["path"], source["format"]) != "jsonl":
            return False
    return True


def load_state(cache: Path, data: dict) -> dict | None:
    path = cache / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = state.get("slice") == f"{READER_VERSION}:{canonical_json(data)}"
    return state if same and len(state["shards"]) == data["num_shards"] else None


def chunk_list(data: dict) -> list[tuple]:
    """(source index, first line, offset, bytes, name) of every chunk of every source."""
    out = []
    for index, source in enumerate(data["sources"]):
        salt = f"{READER_VERSION}:{canonical_json(data)}:{index}:".encode()
        for first_line, offset, chunk in jsonl_chunks(Path(source["path"]).read_bytes()):
            out.append((index, first_line, offset, chunk, hashlib.sha256(salt + chunk).hexdigest()[:32]))
    return out


def parse_chunks(data: dict, chunks: list, workers: int) -> list[dict]:
    collapse = data["clean"]["normalize_whitespace"]
    tasks = [(data["sources"][c[0]], c[0], collapse, c[1], c[2], c[3]) for c in chunks]
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_parse_chunk, tasks, chunksize=1)
    return list(map(_parse_chunk, tasks))


def chunk_lines(data: dict, index: int, result: dict) -> list[str]:
    return resample(result["lines"], data["sources"][index], data["split_seed"])


def cached_lines(data: dict, cache: Path, name: str, index: int) -> list[str] | None:
    file = cache / f"{name}.json"
    if not file.is_file():
        return None
    return chunk_lines(data, index, json.loads(file.read_text(encoding="utf-8")))


def read_changes(data: dict, cache: Path, state: dict | None, workers: int):
    """(chunks, their summaries, removed lines, added lines, names parsed) or None (fall back).
    A chunk counts by its bytes: one that appears more (fewer) times than before adds (removes)
    its lines that many times; a moved chunk with bad rows is parsed again for its messages."""
    chunks = chunk_list(data)
    old = state["chunks"] if state else {}
    old_order = Counter(state["order"] if state else [])
    new_order = Counter(c[4] for c in chunks)
    summaries, todo, parsed = {}, [], {}
    for chunk in chunks:
        summary = old.get(chunk[4])
        if summary and (not summary["bad"] or summary["first_line"] == chunk[1]):
            summaries[chunk[4]] = summary
        elif chunk[4] not in {c[4] for c in todo}:
            todo.append(chunk)
    for chunk, result in zip(todo, parse_chunks(data, todo, workers)):
        atomic_write_text(
            cache / f"{chunk[4]}.json", json.dumps(result | {"first_line": chunk[1]}, ensure_ascii=False)
        )
        parsed[chunk[4]] = lines = chunk_lines(data, chunk[0], result)
        summaries[chunk[4]] = {"source": chunk[0], "first_line": chunk[1], "records": len(lines)} | {
            k: result[k] for k in ("bad", "examples")
        }
    removed, added = [], []
    for changes, order, counts in ((removed, old_order, new_order), (added, new_order, old_order)):
        for name, times in (order - counts).items():
            index = (summaries.get(name) or old[name])["source"]
            lines = parsed[name] if name in parsed else cached_lines(data, cache, name, index)
            if lines is None:
                return None
            changes += lines * times
    return chunks, summaries, removed, added, set(parsed)


def rebuild_buckets(data: dict, state: dict | None, shard_dir: Path, removed: list, added: list):
    """Per bucket: (hash, text or None when unchanged, count); None when an old shard is gone."""
    n = data["num_shards"]
    shards = [tuple(s) if s else None for s in state["shards"]] if state else [None] * n
    delta = [Counter() for _ in range(n)]
    for line in removed:
        delta[bucket(line[8:24], n)][line] -= 1
    for line in added:
        delta[bucket(line[8:24], n)][line] += 1
    out = []
    for change, old in zip(delta, shards):
        if not change or all(v == 0 for v in change.values()):
            out.append((old[0], None, old[1]) if old else None)
            continue
        if not old and all(v > 0 for v in change.values()):  # a new bucket: no old lines to drop
            lines = sorted(change.elements())
            text = "\n".join(lines) + "\n"
            out.append((hashlib.sha256(text.encode()).hexdigest()[:16], text, len(lines)))
            continue
        counts = Counter()
        if old:
            path = shard_dir / f"{old[0]}.jsonl"
            if not path.is_file():
                return None
            counts.update(path.read_text(encoding="utf-8").splitlines())
        counts.update(change)
        lines = sorted(counts.elements())
        if not lines:
            out.append(None)
            continue
        text = "\n".join(lines) + "\n"
        out.append((hashlib.sha256(text.encode()).hexdigest()[:16], text, len(lines)))
    return out


def source_summaries(data: dict, chunks: list, summaries: dict, parsed: set):
    """(per-source manifest entries, bad counts, bad examples), in chunk order."""
    sources, bad, examples = [], Counter(), {}
    for index, source in enumerate(data["sources"]):
        mine = [c[4] for c in chunks if c[0] == index]
        source_bad = Counter()
        for name in mine:
            source_bad.update(summaries[name]["bad"])
            for reason, texts in summaries[name]["examples"].items():
                examples.setdefault(reason, []).extend(texts[: EXAMPLES - len(examples.get(reason, []))])
        bad.update(source_bad)
        sources.append(
            {"path": source["path"], "records": sum(summaries[n]["records"] for n in mine)}
            | {"bad": sum(source_bad.values()), "chunks": len(mine)}
            | {"chunks_cached": sum(n not in parsed for n in mine)}
        )
    return sources, bad, examples


def incremental_shards(data: dict, cache: Path, shard_dir: Path, workers: int):
    """(shards [(hash, text or None, count)] per non-empty bucket, sources, bad, examples,
    save, the shards replaced): `save()` records the state once the shards are written (the
    replaced shards' cleaned files are kept by keep_replaced). None: read everything."""
    state = load_state(cache, data)
    changes = read_changes(data, cache, state, workers)
    if changes is None:
        return None
    chunks, summaries, removed, added, parsed = changes
    buckets = rebuild_buckets(data, state, shard_dir, removed, added)
    if buckets is None:
        return None
    sources, bad, examples = source_summaries(data, chunks, summaries, parsed)
    names = [c[4] for c in chunks]
    old_shards = state["shards"] if state else [None] * len(buckets)
    previous = {new[0]: old[0] for new, old in zip(buckets, old_shards) if new and old and new[1] is not None}

    def save():
        used = set(names)
        for stale in cache.glob("*.json"):
            if stale.name not in (STATE, PREVIOUS) and stale.stem not in used:
                stale.unlink(missing_ok=True)
        body = {
            "slice": f"{READER_VERSION}:{canonical_json(data)}",
            "order": names,
            "chunks": {name: summaries[name] for name in used},
            "shards": [[b[0], b[2]] if b else None for b in buckets],
        }
        atomic_write_text(cache / STATE, json.dumps(body, ensure_ascii=False))
        atomic_write_text(cache / PREVIOUS, json.dumps(previous, sort_keys=True))

    return [b for b in buckets if b], sources, bad, examples, save, set(previous.values())


def keep_replaced(cache: Path, shard_dir: Path, replaced: set[str]) -> None:
    """Move the raw shards this run replaced to `<cache>/previous/` (dropping the ones kept by
    the run before): tokenize_shard reuses the rows of their unchanged records."""
    folder = cache / "previous"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink(missing_ok=True)
    for digest in replaced:
        path = shard_dir / f"{digest}.jsonl"
        if path.is_file():
            path.replace(folder / path.name)


def sorted_lines(shard_dir: Path, shards: list):
    """Per shard, an iterator over its lines in order (read from its file when unchanged)."""
    for digest, text, _ in shards:
        if text is not None:
            yield iter(text.splitlines())
        else:
            yield (line.rstrip("\n") for line in open(shard_dir / f"{digest}.jsonl", encoding="utf-8"))


def merged_lines(shard_dir: Path, shards: list):
    return heapq.merge(*sorted_lines(shard_dir, shards))
