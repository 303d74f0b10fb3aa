"""Sharding: read a data section's sources, map and normalise their records, and bucket them
into content-named shards (used by the shard_data step and by `snakemake why`).

JSONL sources are read in content-defined chunks whose results are cached, so a rerun after
editing one record parses one chunk, not the whole source.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing
import zlib
from collections import Counter
from pathlib import Path

from scripts.common.files import atomic_write_text
from scripts.common.hub_sources import source_paths
from scripts.common.records import (
    SourceError,
    bucket,
    iter_rows,
    jsonl_rows,
    map_fields,
    normalize_record,
    record_id,
    source_format,
    split_of,
    unit_hash,
)
from scripts.common.spec import canonical_json

# A built model's tokenizer trains on a bounded sample of the training split: the records with
# the smallest ids, each cut to SAMPLE_RECORD_CHARS, up to SAMPLE_BYTES in all. The sample file
# stays under Snakemake's 1 MB checksum limit, so a rewrite with the same bytes (an edit of a
# record outside the sample) does not rerun the model step or re-tokenize every shard.
SAMPLE_BYTES = 256 * 1024
SAMPLE_RECORD_CHARS = 2000

CHUNK_MASK = 0xFFF  # a chunk ends after a line whose crc32 ends in 12 zero bits: ~4096 lines
ID_END = 27  # every stored line starts with '{"id": "<16 hex>", '
EXAMPLES = 3
# Part of every cached chunk's name: bump it when reading a row changes (2: JSON numbers kept as
# written, NaN and Infinity refused), so chunks cached by an older reader are parsed again.
READER_VERSION = 2


_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


def record_line(rid: str, rest: dict) -> str:
    """One stored record: the id first (so sorting lines sorts by id), then sorted fields."""
    return f'{{"id": "{rid}", ' + _ENCODE(rest)[1:]


def read_rows(rows, source: dict, index: int, collapse: bool) -> dict:
    """Map, normalise and serialise rows; bad rows raise (on_error fail) or are counted."""
    lines, bad, examples = [], Counter(), {}
    extra = {"source": index} | ({"split": source["split"]} if source["split"] != "auto" else {})
    for where, row in rows:
        try:
            if isinstance(row, SourceError):
                raise row
            record = normalize_record(map_fields(row, source, where), collapse)
        except SourceError as exc:
            if source["on_error"] == "fail":
                raise
            bad[exc.reason] += 1
            if len(examples.setdefault(exc.reason, [])) < EXAMPLES:
                examples[exc.reason].append(str(exc))
            continue
        lines.append(record_line(record_id(record), {**extra, **record}))
    return {"lines": lines, "bad": dict(bad), "examples": examples}


def jsonl_chunks(data: bytes):
    """(first line number, byte offset, bytes) of content-defined chunks: an edit changes one."""
    start_line, start_offset, offset, current = 1, 0, 0, []
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        current.append(line)
        offset += len(line) + 1
        if zlib.crc32(line) & CHUNK_MASK == 0:
            yield start_line, start_offset, b"\n".join(current)
            start_line, start_offset, current = line_no + 1, offset, []
    if current:
        yield start_line, start_offset, b"\n".join(current)


def _parse_chunk(task) -> dict:
    source, index, collapse, first_line, offset, chunk = task
    return read_rows(jsonl_rows(source["path"], chunk, first_line, offset), source, index, collapse)


def read_jsonl_cached(source: dict, index: int, data: dict, cache: Path | None, used: set, workers: int):
    """Like read_rows over the whole file, reusing cached results of unchanged chunks and
    parsing the others in `workers` processes."""
    path, collapse = Path(source["path"]), data["clean"]["normalize_whitespace"]
    raw = path.read_bytes() if path.is_file() else b""
    if not raw.strip():
        return [read_rows(iter_rows(source["path"], "jsonl"), source, index, collapse)]
    chunks, results, files, todo = list(jsonl_chunks(raw)), [], [], []
    salt = f"{READER_VERSION}:{canonical_json(data)}:{index}:".encode()
    for i, (first_line, _, chunk) in enumerate(chunks):
        file = cache / f"{hashlib.sha256(salt + chunk).hexdigest()[:32]}.json" if cache else None
        files.append(file)
        cached = json.loads(file.read_text(encoding="utf-8")) if file and file.is_file() else None
        if cached and (not cached["bad"] or cached["first_line"] == first_line):  # error locations hold
            used.add(file.name)
            results.append(cached | {"cached": True})
        else:
            results.append(None)
            todo.append(i)
    tasks = [(source, index, collapse, *chunks[i]) for i in todo]
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parsed = pool.map(_parse_chunk, tasks, chunksize=1)
    else:
        parsed = map(_parse_chunk, tasks)
    for i, result in zip(todo, parsed):
        results[i] = result
        if files[i]:
            atomic_write_text(files[i], json.dumps(result | {"first_line": chunks[i][0]}, ensure_ascii=False))
            used.add(files[i].name)
    return results


def resample(lines: list[str], source: dict, seed: int) -> list[str]:
    """Apply a source's `sample` (keep N by hash) and `weight` (copies that share a split)."""
    if source["sample"] is not None and source["sample"] < len(lines):
        lines = sorted(lines, key=lambda line: unit_hash(f"sample{seed}", line[8:24]))[: source["sample"]]
    weight = source["weight"]
    if weight == 1:
        return lines
    out = []
    for line in lines:
        rid = line[8:24]
        copies = int(weight) + (unit_hash(f"weight{seed}", rid) < weight - int(weight))
        for copy in range(copies):
            if copy == 0:
                out.append(line)
            else:
                new = hashlib.sha256(f"{rid}#{copy}".encode()).hexdigest()[:16]
                out.append(f'{{"id": "{new}", "group": "{rid}", ' + line[ID_END:])
    return out


def read_file_parts(data: dict, index: int, source: dict, cache: Path | None, used: set, workers: int):
    """The parts (read_rows results) of one file (or save_to_disk folder) of a source."""
    fmt = source_format(source["path"], source["format"])
    if fmt == "jsonl":
        return read_jsonl_cached(source, index, data, cache, used, workers)
    return [
        read_rows(
            iter_rows(source["path"], fmt), source, index, collapse=data["clean"]["normalize_whitespace"]
        )
    ]


def read_source(
    data: dict, index: int, cache: Path | None, used: set, workers: int = 1, resolved: dict | None = None
) -> dict:
    """All stored lines of one source plus its counts; a hub source (`resolved`: its
    resolution, scripts/common/hub_sources.py) is read file by file from its snapshot."""
    source = data["sources"][index]
    paths = source_paths(resolved) if resolved else [source["path"]]
    parts = []
    for path in paths:
        parts += read_file_parts(data, index, {**source, "path": path}, cache, used, workers)
    bad, examples = Counter(), {}
    for part in parts:
        bad.update(part["bad"])
        for reason, texts in part["examples"].items():
            examples.setdefault(reason, []).extend(texts[: EXAMPLES - len(examples.get(reason, []))])
    lines = resample([line for part in parts for line in part["lines"]], source, data["split_seed"])
    cached = sum(bool(part.get("cached")) for part in parts)
    return {"lines": lines, "bad": bad, "examples": examples, "chunks": len(parts), "cached": cached}


def read_all(
    data: dict, cache: Path | None, workers: int = 1, hub: list | None = None
) -> tuple[list[list[str]], list[dict], Counter, dict]:
    """Every source read and bucketed; a file-level problem under on_error skip is counted.
    `hub`: per source, its hub resolution (None for a file source)."""
    buckets = [[] for _ in range(data["num_shards"])]
    sources, bad, examples, used = [], Counter(), {}, set()
    hub = hub or [None] * len(data["sources"])
    for index, source in enumerate(data["sources"]):
        try:
            result = read_source(data, index, cache, used, workers, hub[index])
        except SourceError as exc:
            if source["on_error"] == "fail" or exc.reason == "missing":
                raise
            result = {"lines": [], "bad": Counter({exc.reason: 1}), "examples": {exc.reason: [str(exc)]}}
            result |= {"chunks": 0, "cached": 0}
        for line in result["lines"]:
            buckets[bucket(line[8:24], data["num_shards"])].append(line)
        bad.update(result["bad"])
        for reason, texts in result["examples"].items():
            examples.setdefault(reason, []).extend(texts[: EXAMPLES - len(examples.get(reason, []))])
        summary = {k: result[k] for k in ("chunks", "cached")}
        sources.append(
            {"path": source_label(source, hub[index]), "records": len(result["lines"])}
            | {"bad": sum(result["bad"].values())}
        )
        if hub[index]:
            sources[-1]["hub"] = {k: hub[index][k] for k in ("repo", "revision", "commit", "pinned", "files")}
        sources[-1]["chunks"], sources[-1]["chunks_cached"] = summary["chunks"], summary["cached"]
    if cache:
        for stale in cache.glob("*.json"):
            if stale.name not in used:
                stale.unlink(missing_ok=True)
    return buckets, sources, bad, examples


def shard_texts(buckets: list[list[str]]) -> list[tuple[str, str, int]]:
    """(content hash, JSONL text, record count) per non-empty bucket, records in id order."""
    out = []
    for lines in buckets:
        if lines:
            text = "\n".join(sorted(lines)) + "\n"
            out.append((hashlib.sha256(text.encode()).hexdigest()[:16], text, len(lines)))
    return out


def source_label(source: dict, resolved: dict | None) -> str:
    """A source as the manifest names it: its path, or hf://datasets/<repo>@<commit>."""
    return f"hf://datasets/{resolved['repo']}@{resolved['commit']}" if resolved else source["path"]


def source_files(path: str) -> list[str]:
    folder = Path(path)
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [path]


def tokenizer_text(record: dict) -> str:
    """The text a tokenizer learns from: the text, the messages' contents, prompt and completion,
    or a preference pair's prompt and responses."""
    if "text" in record:
        return record["text"]
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"])
    if "chosen" in record:  # a preference pair: the prompt and both responses
        parts = [record[k] for k in ("prompt", "chosen", "rejected")]
        return (
            "\n".join(m["content"] for p in parts for m in p)
            if isinstance(parts[0], list)
            else " ".join(parts)
        )
    return f"{record['prompt']} {record['completion']}"


def tokenizer_sample(buckets: list[list[str]], data: dict, lines=None) -> str:
    """JSONL of {"id", "text"}: the training records with the smallest ids (bounded, see above);
    `lines`: every stored line in order, when the buckets are not at hand."""
    out, size, last = [], 0, None
    lines = heapq.merge(*(sorted(b) for b in buckets)) if lines is None else lines
    for line in lines:  # stored lines start with the id
        record = json.loads(line)
        if record["id"] == last or split_of(record, data) != "train":
            continue
        last = record["id"]
        entry = json.dumps(
            {"id": last, "text": tokenizer_text(record)[:SAMPLE_RECORD_CHARS]}, ensure_ascii=False
        )
        size += len(entry.encode()) + 1
        if size > SAMPLE_BYTES:
            break
        out.append(entry + "\n")
    return "".join(out)
