"""Reading sources into records, normalising them, and hashing them into shards and splits.

A record is a dict with either `text`, or `prompt` and `completion`. Its id is the hash of
its normalised content, so exact duplicates share an id and a shard, and the train/validation
split of a record never changes when other records do.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from pathlib import Path

from scripts.common.spec import canonical_json

_SPACES = re.compile(r"[ \t\u00a0]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


class SourceError(ValueError):
    """A bad record or file; the message names file, line (or row) and field."""


def source_format(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise SourceError(
            f"{path}: cannot tell the format from the extension; set format to one of "
            f"{', '.join(sorted(set(FORMATS.values())))}"
        )
    return fmt


def _decode_lines(path: Path):
    """(line number, text) pairs; invalid UTF-8 is reported with its byte offset."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"{path}:{line}: invalid UTF-8 at byte offset {exc.start}; re-encode the file as UTF-8"
        ) from None
    return enumerate(text.splitlines(), start=1)


def iter_rows(path: str, fmt: str):
    """(location, row dict or SourceError) pairs of one source file, in file order."""
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"{path}: file not found (paths are relative to the workflow folder)")
    if file.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty")
    if fmt == "jsonl":
        for line_no, line in _decode_lines(file):
            if not line.strip():
                continue
            try:
                yield f"{path}:{line_no}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    f"{path}:{line_no}",
                    SourceError(f"{path}:{line_no}: malformed JSON: {exc.msg} at column {exc.colno}"),
                )
    elif fmt == "json":
        try:
            rows = json.loads("\n".join(line for _, line in _decode_lines(file)))
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        if not isinstance(rows, list):
            raise SourceError(
                f"{path}: a .json source must be an array of objects; use .jsonl for one object per line"
            )
        for index, row in enumerate(rows):
            yield f"{path}[{index}]", row
    elif fmt in ("csv", "tsv"):
        lines = [line for _, line in _decode_lines(file)]
        reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",")
        header = next(reader)
        for row_no, values in enumerate(reader, start=2):
            if len(values) != len(header):
                yield (
                    f"{path}:{row_no}",
                    SourceError(
                        f"{path}:{row_no}: row has {len(values)} columns, the header has {len(header)}"
                    ),
                )
            else:
                yield f"{path}:{row_no}", dict(zip(header, values))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        for index, row in enumerate(pq.read_table(file).to_pylist()):
            yield f"{path}[row {index}]", row
    else:
        raise SourceError(f"{path}: unsupported format {fmt!r}")


def map_fields(row, fields: dict, where: str) -> dict:
    """Map one source row onto the record shape; numbers become strings deliberately."""
    import difflib

    if not isinstance(row, dict):
        raise SourceError(f"{where}: expected an object, got {type(row).__name__}")
    record = {}
    for name, column in fields.items():
        if column not in row:
            guess = difflib.get_close_matches(column, list(map(str, row)), n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            raise SourceError(
                f"{where}: missing field '{column}' (for {name}); the record has "
                f"{', '.join(map(str, row)) or 'no fields'}{hint}"
            )
        value = row[column]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SourceError(
                f"{where}: field '{column}' must be a string, got {type(value).__name__} {value!r:.40}"
            )
        record[name] = str(value)
    return record


def normalize_text(text: str, collapse_whitespace: bool = True) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    text = _CONTROL.sub("", text)
    if collapse_whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()
    return text


def normalize_record(record: dict, collapse_whitespace: bool = True) -> dict:
    return {k: normalize_text(v, collapse_whitespace) for k, v in record.items()}


def record_id(normalized: dict) -> str:
    return hashlib.sha256(canonical_json(normalized).encode()).hexdigest()[:16]


def bucket(rid: str, num_shards: int) -> int:
    return int(rid, 16) % num_shards


def is_validation(rid: str, fraction: float, seed: int) -> bool:
    """Stable split: a record's side depends only on its own content and the seed."""
    digest = hashlib.sha256(f"{seed}:{rid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
