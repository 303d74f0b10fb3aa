"""Incremental sharding (used by shard_data): after an edit, only the chunks of the source that
changed are parsed and only the shards their records fall in are rebuilt.

`<cache>/state.json` keeps, from the last run, the data slice it was built for, every chunk's
name (sha256 of its bytes) with its counts and size (`spans`: bytes and lines), and each
bucket's shard hash. A rerun chunks the sources (the chunks still at a file's start or end are
found by their hash alone, so only the bytes between are split into lines), compares the names, reads the lines of the removed chunks (their cached results)
and of the added ones, and rewrites the buckets those lines fall in from the old shard file:
the same shards, bytes and counts as reading everything, in time that does not grow with the
dataset. Applies to JSONL file sources without `sample` (which picks records across the whole
source); a missing state or file falls back to reading everything.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from pathlib import Path

from scripts.common.files import atomic_write_text, read_and_hash
from scripts.compiler.spec import canonical_json
from scripts.data.records import bucket
from scripts.data.sharding import (
    EXAMPLES,
    READER_VERSION,
    chunk_salt,
    chunk_spans,
    named_chunks,
    parse_tasks,
    rechunk,
    resample,
)
from scripts.data.source_rows import source_format

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


def chunk_list(data: dict, state: dict | None) -> list[tuple]:
    """(source index, first line, offset, bytes, name) of every chunk of every source (each
    file read once: its sha256 for the manifest is computed alongside, see read_and_hash); a
    file's chunks from the last run that are still at its start or end are found by their hash."""
    out = []
    for index, source in enumerate(data["sources"]):
        salt, before = chunk_salt(data, index), spans_before(state, index)
        chunks = read_and_hash(
            source["path"], lambda raw, s=salt, b=before: rechunk(raw, s, b) if b else named_chunks(raw, s)
        )
        out += [(index, *chunk) for chunk in chunks]
    return out


def spans_before(state: dict | None, index: int) -> list | None:
    """(name, bytes, lines) of source `index`'s chunks in the last run, None if not known."""
    if not state or len(state.get("spans", ())) != len(state["order"]):
        return None
    names = zip(state["order"], state["spans"])
    return [(name, *span) for name, span in names if state["chunks"][name]["source"] == index]


def source_spans(chunks: list, index: int) -> list:
    return chunk_spans([chunk[1:] for chunk in chunks if chunk[0] == index])


def parse_chunks(data: dict, chunks: list, workers: int, cache: Path) -> list[dict]:
    """Parse chunks, each worker writing its chunks' cache files."""
    collapse = data["clean"]["normalize_whitespace"]
    tasks = [
        (data["sources"][c[0]], c[0], collapse, c[1], c[2], bytes(c[3]), cache / f"{c[4]}.json")
        for c in chunks
    ]
    return parse_tasks(tasks, workers)


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
    chunks = chunk_list(data, state)
    old = state["chunks"] if state else {}
    old_order = Counter(state["order"] if state else [])
    new_order = Counter(c[4] for c in chunks)
    summaries, todo, parsed = {}, {}, {}
    for chunk in chunks:
        summary = old.get(chunk[4])
        if summary and (not summary["bad"] or summary["first_line"] == chunk[1]):
            summaries[chunk[4]] = summary
        elif chunk[4] not in todo:
            todo[chunk[4]] = chunk
    for chunk, result in zip(todo.values(), parse_chunks(data, list(todo.values()), workers, cache)):
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
    if not state:  # a first build: every line is new
        return new_buckets(n, added)
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
            out.append(shard_text(sorted(change.elements())))
            continue
        counts = Counter()
        if old:
            path = shard_dir / f"{old[0]}.jsonl"
            if not path.is_file():
                return None
            counts.update(path.read_text(encoding="utf-8").split("\n")[:-1])  # text_lines' lines
        counts.update(change)
        lines = sorted(counts.elements())
        if not lines:
            out.append(None)
            continue
        out.append(shard_text(lines))
    return out


def new_buckets(n: int, lines: list[str]) -> list[tuple | None]:
    """Per bucket: (hash, text, count) of its lines in order, None when it has none."""
    buckets = [[] for _ in range(n)]
    for line in lines:
        buckets[int(line[8:24], 16) % n].append(line)  # records.bucket of the line's id, inline
    return [shard_text(sorted(lines)) if lines else None for lines in buckets]


def shard_text(lines: list[str]) -> tuple[str, str, int]:
    text = "\n".join(lines) + "\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16], text, len(lines)


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
            "spans": [
                span[1:] for index in range(len(data["sources"])) for span in source_spans(chunks, index)
            ],
            "chunks": {name: summaries[name] for name in dict.fromkeys(names)},
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
            yield text_lines(text)
        else:
            yield (line.rstrip("\n") for line in open(shard_dir / f"{digest}.jsonl", encoding="utf-8"))


def text_lines(text: str):
    """The lines of a shard's text, one at a time (a tokenizer sample reads only the first few).
    Split at newlines only: a stored line may hold U+2028 or U+0085, which splitlines() splits at."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1


def merged_lines(shard_dir: Path, shards: list):
    return heapq.merge(*sorted_lines(shard_dir, shards))
