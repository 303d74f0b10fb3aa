"""Sharding: read a data section's sources, map and normalise their records, and bucket them
into content-named shards (used by the shard_data step and by `snakemake why`).

JSONL sources are read in content-defined chunks whose results are cached, so a rerun after
editing one record parses one chunk, not the whole source.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import operator
import zlib
from collections import Counter
from itertools import accumulate, compress, count
from json.encoder import encode_basestring
from pathlib import Path

from scripts.common.files import atomic_write_text, read_and_hash
from scripts.compiler.hub_sources import source_paths
from scripts.compiler.spec import canonical_json
from scripts.data.records import (
    bucket,
    collapse_spaces,
    map_fields,
    normalize_record,
    normalize_text,
    record_id,
    unit_hash,
)
from scripts.data.source_rows import SourceError, iter_rows, jsonl_rows, source_format

CHUNK_MASK = 0xFFF  # a chunk ends after a line whose crc32 ends in 12 zero bits: ~4096 lines
ID_END = 27  # every stored line starts with '{"id": "<16 hex>", '
EXAMPLES = 3
# Part of every cached chunk's name: bump it when reading a row changes (2: JSON numbers kept as
# written, NaN and Infinity refused; 3: floats past a double's range, 1e400, refused too), so
# chunks cached by an older reader are parsed again.
READER_VERSION = 3


_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
_STR = encode_basestring  # what both encoders above write for a str (ensure_ascii=False)
# The record shapes map_fields picks other than plain texts (text, or prompt and completion).
NOT_PLAIN = frozenset({"chosen", "label", "messages", "instruction"})


def record_line(rid: str, rest: dict) -> str:
    """One stored record: the id first (so sorting lines sorts by id), then sorted fields."""
    return f'{{"id": "{rid}", ' + _ENCODE(rest)[1:]


class TextLines:
    """Stored lines of records whose fields (`names`) are all texts, the same bytes as
    record_line(record_id(r), {**extra, **r}) with r = normalize_record(record, collapse): each
    text is JSON-encoded once, into templates of the canonical key (for the id) and the line."""

    def __init__(self, names, extra: dict, collapse: bool):
        self.names, self.collapse = sorted(names), collapse
        fields = {name: _ENCODE(value).replace("%", "%%") for name, value in extra.items()}
        fields |= dict.fromkeys(self.names, "%s")
        self.key = "{" + ",".join(f"{_key(name)}:%s" for name in self.names) + "}"
        self.line = (
            '{"id": "%s", ' + ", ".join(f"{_key(name)}: {fields[name]}" for name in sorted(fields)) + "}"
        )

    def __call__(self, texts: list[str]) -> str:
        """The line of a record whose texts, in `names` order, are `texts`."""
        texts = [text if text.isascii() and text.isprintable() else normalize_text(text) for text in texts]
        stored = list(map(_STR, texts))
        key = stored
        if self.collapse:
            key = [
                encoded if (collapsed := collapse_spaces(text)) is text else _STR(collapsed)
                for text, encoded in zip(texts, stored)
            ]
        rid = hashlib.sha256((self.key % tuple(key)).encode()).hexdigest()[:16]
        return self.line % (rid, *stored)


def _key(name: str) -> str:
    return _STR(name).replace("%", "%%")


def mapped_line(record: dict, extra: dict, collapse: bool, texts: dict) -> str:
    """The stored line of a mapped record; `texts`: TextLines by field names, filled as used."""
    if all(type(value) is str for value in record.values()):
        names = tuple(sorted(record))
        make = texts.get(names) or texts.setdefault(names, TextLines(names, extra, collapse))
        return make([record[name] for name in names])
    normalized = normalize_record(record, collapse)
    return record_line(record_id(normalized), {**extra, **normalized})


def read_rows(rows, source: dict, index: int, collapse: bool) -> dict:
    """Map, normalise and serialise rows; bad rows raise (on_error fail) or are counted. Rows
    of plain texts (all strings) skip map_fields' checks; other rows go through them."""
    lines, bad, examples, texts = [], Counter(), {}, {}
    extra = {"source": index} | ({"split": source["split"]} if source["split"] != "auto" else {})
    fields = source["fields"]
    plain = None if NOT_PLAIN & fields.keys() else TextLines(fields, extra, collapse)
    columns = [fields[name] for name in plain.names] if plain else []
    for where, row in rows:
        try:
            if isinstance(row, SourceError):
                raise row
            if plain and type(row) is dict:
                values = [row.get(column) for column in columns]
                if all(type(value) is str for value in values):
                    lines.append(plain(values))
                    continue
            lines.append(mapped_line(map_fields(row, source, where), extra, collapse, texts))
        except SourceError as exc:
            if source["on_error"] == "fail":
                raise
            bad[exc.reason] += 1
            if len(examples.setdefault(exc.reason, [])) < EXAMPLES:
                examples[exc.reason].append(str(exc))
    return {"lines": lines, "bad": dict(bad), "examples": examples}


def jsonl_chunks(data: bytes):
    """(first line number, byte offset, bytes) of content-defined chunks: an edit changes one.
    A chunk ends after each line whose crc32 ends in CHUNK_MASK's zero bits (found at C speed)."""
    lines = data.split(b"\n")
    ends = list(compress(count(1), map(operator.not_, map(CHUNK_MASK.__and__, map(zlib.crc32, lines)))))
    if not ends or ends[-1] != len(lines):
        ends.append(len(lines))  # the lines after the last boundary
    starts = [0, *accumulate(map(len, lines))]  # line i starts at byte starts[i] + i
    first = 0
    for end in ends:
        offset = starts[first] + first
        yield first + 1, offset, data[offset : starts[end] + end - 1]
        first = end


def chunk_name(salt: bytes, chunk: bytes | memoryview) -> str:
    """A chunk's cache name: sha256 of the slice's salt and the chunk's bytes."""
    digest = hashlib.sha256(salt)
    digest.update(chunk)
    return digest.hexdigest()[:32]


def _ends_chunk(raw: bytes, end: int) -> bool:
    """Whether the line that ends at byte `end` of raw (before a newline or the end) ends a chunk."""
    return not zlib.crc32(raw[raw.rfind(b"\n", 0, end) + 1 : end]) & CHUNK_MASK


def chunk_spans(chunks: list) -> list[tuple[str, int, int]]:
    """(name, bytes, lines) of a file's chunks (first line, offset, bytes, name): rechunk's `before`."""
    firsts = (
        [chunk[0] for chunk in chunks[1:]] + [chunks[-1][0] + bytes(chunks[-1][2]).count(b"\n") + 1]
        if chunks
        else []
    )
    return [(name, len(chunk), end - first) for (first, _, chunk, name), end in zip(chunks, firsts)]


def rechunk(raw: bytes, salt: bytes, before: list) -> list[tuple[int, int, bytes, str]]:
    """named_chunks(raw, salt), given the chunks of an earlier version of the file, in order, as
    (name, bytes, lines): earlier chunks still at the start or at the end of the file are
    recognised by their name (hash) and place alone; only the bytes between are split in lines.
    The bytes of those reused chunks are memoryviews of raw (bytes(chunk) where bytes are needed)."""
    view, head, pos, line = memoryview(raw), [], 0, 1
    for name, size, lines in before:
        end = pos + size
        if end > len(raw) or (end < len(raw) and (raw[end] != 10 or not _ends_chunk(raw, end))):
            break
        chunk = view[pos:end]
        if chunk_name(salt, chunk) != name:
            break
        head.append((line, pos, chunk, name))
        if end == len(raw):
            return head
        pos, line = end + 1, line + lines
    tail, end = [], len(raw)  # chunks from the end: (offset, bytes, name, lines)
    for name, size, lines in reversed(before[len(head) :]):
        start = end - size
        if start < pos or (start and (raw[start - 1] != 10 or not _ends_chunk(raw, start - 1))):
            break
        chunk = view[start:end]
        if (end < len(raw) and not _ends_chunk(raw, end)) or chunk_name(salt, chunk) != name:
            break
        tail.append((start, chunk, name, lines))
        end = start - 1
    middle = []
    if end >= pos:  # the lines between (end: where the first reused tail chunk starts, less one)
        middle = [
            (line + first - 1, pos + offset, chunk) for first, offset, chunk in jsonl_chunks(raw[pos:end])
        ]
        line += raw.count(b"\n", pos, end) + 1
    out = head + [(*chunk, chunk_name(salt, chunk[2])) for chunk in middle]
    for offset, chunk, name, lines in reversed(tail):
        out.append((line, offset, chunk, name))
        line += lines
    return out


def chunk_salt(data: dict, index: int) -> bytes:
    return f"{READER_VERSION}:{canonical_json(data)}:{index}:".encode()


def _parse_chunk(task) -> dict:
    """read_rows over one chunk; with a cache file, also writes the result there (in the worker,
    so the writes run in parallel too)."""
    source, index, collapse, first_line, offset, chunk, *file = task
    result = read_rows(jsonl_rows(source["path"], chunk, first_line, offset), source, index, collapse)
    if file and file[0]:
        atomic_write_text(file[0], json.dumps(result | {"first_line": first_line}, ensure_ascii=False))
    return result


def parse_tasks(tasks: list, workers: int):
    """_parse_chunk over tasks, in `workers` processes when there is more than one task."""
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_parse_chunk, tasks, chunksize=1)
    return list(map(_parse_chunk, tasks))


def named_chunks(raw: bytes, salt: bytes) -> list[tuple[int, int, bytes, str]]:
    """(first line, offset, bytes, cache name) of every chunk of a JSONL file's bytes."""
    return [(*chunk, chunk_name(salt, chunk[2])) for chunk in jsonl_chunks(raw)]


def read_jsonl_cached(source: dict, index: int, data: dict, cache: Path | None, used: set, workers: int):
    """Like read_rows over the whole file, reusing cached results of unchanged chunks and
    parsing the others in `workers` processes."""
    path, collapse, salt = (
        Path(source["path"]),
        data["clean"]["normalize_whitespace"],
        chunk_salt(data, index),
    )
    chunks = None
    if path.is_file():
        chunks = read_and_hash(path, lambda raw: named_chunks(raw, salt) if raw.strip() else None)
    if not chunks:
        return [read_rows(iter_rows(source["path"], "jsonl"), source, index, collapse)]
    results, todo = [], []
    for i, (first_line, *_, name) in enumerate(chunks):
        file = cache / f"{name}.json" if cache else None
        cached = json.loads(file.read_text(encoding="utf-8")) if file and file.is_file() else None
        if cached and (not cached["bad"] or cached["first_line"] == first_line):  # error locations hold
            used.add(file.name)
            results.append(cached | {"cached": True})
        else:
            results.append(None)
            todo.append(i)
    last = {chunks[i][3]: i for i in todo}  # a name parsed twice is written by its last chunk
    files = [cache / f"{chunks[i][3]}.json" if cache and last[chunks[i][3]] == i else None for i in todo]
    tasks = [(source, index, collapse, *chunks[i][:3], file) for i, file in zip(todo, files)]
    for i, result in zip(todo, parse_tasks(tasks, workers)):
        results[i] = result
        if cache:
            used.add(f"{chunks[i][3]}.json")
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
    resolution, scripts/compiler/hub_sources.py) is read file by file from its snapshot."""
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
