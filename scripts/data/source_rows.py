"""Reading a data source's rows (JSONL, JSON, CSV/TSV, Parquet) and their fields, with errors that
name the file, the line and the column (`SourceError`). Numbers keep their source text
(`JSONNumber`), so "0.10" stays "0.10"."""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from pathlib import Path

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which Windows tools write at the start of text files


class JSONNumber(str):
    """A number in a JSON/JSONL source, kept as the file writes it ("68", "2.50", "1e400"): a
    text field gets exactly those characters. Also NaN, Infinity and -Infinity, which JSON does
    not have but Python's json reads: a text field refuses those (see _string)."""

    __slots__ = ()


# Numbers stay text: no float rounding ("2.50" -> 2.5), no overflow to inf ("1e400" -> "inf"),
# no ValueError past Python's 4300-digit int limit, and NaN/Infinity marked, not made floats.
_JSON = json.JSONDecoder(parse_float=JSONNumber, parse_int=JSONNumber, parse_constant=JSONNumber)
NOT_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})


def _kind(value) -> str:
    return "number" if isinstance(value, JSONNumber) else type(value).__name__


class SourceError(ValueError):
    """A bad record or file; the message names file, line (or row) and field."""

    def __init__(self, message: str, reason: str = "bad_record"):
        super().__init__(message)
        self.reason = reason


def source_format(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    if Path(path).is_dir():
        return "arrow"
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise SourceError(
            f"{path}: cannot tell the format from the extension; set format to one of "
            f"{', '.join(sorted({*FORMATS.values(), 'arrow'}))}",
            "format",
        )
    return fmt


def _decode(data: bytes, path, offset: int = 0) -> str:
    """UTF-8 text of bytes found at `offset` in a file; a BOM at offset 0 is not part of the text."""
    if offset == 0 and data.startswith(BOM):
        data, offset = data[len(BOM) :], len(BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path}: invalid UTF-8 at byte offset {offset + exc.start}; re-encode the file as UTF-8",
            "invalid_utf8",
        ) from None


def _malformed(where: str, exc: json.JSONDecodeError) -> SourceError:
    # Some of json's messages end in "at" ("Unterminated string starting at"): say it once.
    return SourceError(
        f"{where}: malformed JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}", "malformed_json"
    )


def jsonl_rows(path: str, data: bytes, first_line: int = 1, offset: int = 0):
    """(location, row or SourceError) per non-blank line of JSONL bytes starting at that line/offset."""
    try:
        text = (data.removeprefix(BOM) if offset == 0 else data).decode("utf-8")
    except UnicodeDecodeError:  # line by line, for the location of the bad bytes
        yield from _jsonl_rows_bytes(path, data, first_line, offset)
        return
    for line_no, line in enumerate(text.split("\n"), start=first_line):
        if line.strip(ASCII_SPACE):  # blank lines as bytes.strip() sees them
            where = f"{path}:{line_no}"
            try:
                yield where, _decode_line(line)
            except json.JSONDecodeError as exc:
                yield where, _malformed(where, exc)


def _decode_line(line: str):
    """_JSON.decode(line); a line that is exactly one JSON value skips its whitespace checks."""
    try:
        value, end = _JSON.scan_once(line, 0)
        if end == len(line):
            return value
    except (StopIteration, json.JSONDecodeError):
        pass
    return _JSON.decode(line)  # the value after whitespace, or the error as decode words it


ASCII_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() strips


def _jsonl_rows_bytes(path: str, data: bytes, first_line: int, offset: int):
    for line_no, raw in enumerate(data.split(b"\n"), start=first_line):
        start, offset = offset, offset + len(raw) + 1
        if not raw.removeprefix(BOM if start == 0 else b"").strip():
            continue
        where = f"{path}:{line_no}"
        try:
            yield where, _JSON.decode(_decode(raw, where, start))
        except SourceError as exc:
            yield where, exc
        except json.JSONDecodeError as exc:
            yield where, _malformed(where, exc)


def _csv_rows(path: str, data: bytes, delimiter: str):
    reader = csv.reader(io.StringIO(_decode(data, path), newline=""), delimiter=delimiter)
    header = next(reader)
    for values in reader:
        where = f"{path}:{reader.line_num}"
        if len(values) != len(header):
            yield (
                where,
                SourceError(
                    f"{where}: row has {len(values)} columns, the header has {len(header)} "
                    f"({', '.join(header)}); quote fields that contain the delimiter",
                    "ragged_row",
                ),
            )
        else:
            yield where, dict(zip(header, values))


def _arrow_rows(path: str):
    import pyarrow as pa

    folder = Path(path)
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        raise SourceError(
            f"{path}: a DatasetDict folder; point the source at one split: "
            + ", ".join(f"{path}/{s}" for s in splits),
            "format",
        )
    if not (folder / "state.json").is_file():
        raise SourceError(f"{path}: not a folder written by datasets' save_to_disk (no state.json)", "format")
    files = [folder / f["filename"] for f in json.loads((folder / "state.json").read_text())["_data_files"]]
    index = 0
    for file in files:
        with pa.memory_map(str(file)) as stream:
            for batch in pa.ipc.open_stream(stream):
                for row in batch.to_pylist():
                    yield f"{path}[row {index}]", row
                    index += 1


def iter_rows(path: str, fmt: str):
    """(location, row dict or SourceError) pairs of one source, in file order.

    Raises SourceError for problems with the whole file (missing, empty, undecodable CSV/JSON)."""
    file = Path(path)
    if fmt == "arrow":
        if not file.is_dir():
            raise SourceError(
                f"{path}: folder not found (paths are relative to the workflow folder)", "missing"
            )
        yield from _arrow_rows(path)
        return
    if not file.is_file():
        raise SourceError(f"{path}: file not found (paths are relative to the workflow folder)", "missing")
    data = file.read_bytes()
    if not data.removeprefix(BOM).strip():
        raise SourceError(f"{path}: the file is empty; remove the source or fill it", "empty_file")
    if fmt == "jsonl":
        yield from jsonl_rows(path, data)
    elif fmt == "json":
        try:
            rows = _JSON.decode(_decode(data, path))
        except json.JSONDecodeError as exc:
            raise _malformed(f"{path}:{exc.lineno}", exc) from None
        if not isinstance(rows, list):
            raise SourceError(
                f"{path}: a .json source must be an array of objects; use .jsonl for one object per line",
                "wrong_type",
            )
        for index, row in enumerate(rows):
            yield f"{path}[{index}]", row
    elif fmt in ("csv", "tsv"):
        yield from _csv_rows(path, data, "\t" if fmt == "tsv" else ",")
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        for index, row in enumerate(pq.read_table(file).to_pylist()):
            yield f"{path}[row {index}]", row
    else:
        raise SourceError(f"{path}: unsupported format {fmt!r}", "format")


def _get(row: dict, column: str, where: str, optional: bool = False):
    if column in row:
        return row[column]
    if optional:
        return ""
    guess = difflib.get_close_matches(column, list(map(str, row)), n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ""
    raise SourceError(
        f"{where}: missing field '{column}'; the record has {', '.join(map(str, row)) or 'no fields'}{hint}",
        "missing_field",
    )


def _number_text(value) -> str | None:
    """The text of a finite number (a JSON number as written), None for NaN and infinities,
    and for a float that overflows a double ("1e400": infinity to every other JSON reader)."""
    if isinstance(value, JSONNumber):
        if value in NOT_FINITE or (not value.lstrip("-").isdigit() and math.isinf(float(value))):
            return None
        return str(value)
    return str(value) if isinstance(value, int) or math.isfinite(value) else None


def _string(value, column: str, where: str) -> str:
    """The text of a field that must be a string. A number is taken as its text (an answer like
    68): in JSON as the file writes it, in parquet and arrow as Python writes it. NaN and the
    infinities have no text to train on (in parquet NaN is often a missing value): they fail like
    a list or null would. CSV and TSV cells are always text, as written."""
    if isinstance(value, str) and not isinstance(value, JSONNumber):
        return value
    if isinstance(value, (JSONNumber, int, float)) and not isinstance(value, bool):
        text = _number_text(value)
        if text is not None:
            return text
        got = (
            f'{value} (not a finite number); write "{value}" in quotes if it is the text to train on'
            if isinstance(value, JSONNumber)
            else f"the float {value} (not a finite number; a missing value?)"
        )
        raise SourceError(f"{where}: field '{column}' must be a string, got {got}", "wrong_type")
    raise SourceError(
        f"{where}: field '{column}' must be a string, got {type(value).__name__} {value!r:.40}",
        "wrong_type",
    )


def map_messages(value, chat: dict, column: str, where: str) -> list[dict]:
    """A conversation as [{role, content}], with sharegpt-style keys and roles mapped."""
    if isinstance(value, str):
        try:
            value = _JSON.decode(value)  # CSV and parquet sources may hold the list as JSON text
        except json.JSONDecodeError:
            pass
    if not isinstance(value, list) or not value:
        raise SourceError(
            f"{where}: field '{column}' must be a non-empty list of messages, got {_kind(value)}",
            "wrong_type",
        )
    messages = []
    for turn, message in enumerate(value):
        at = f"{where}: {column}[{turn}]"
        if not isinstance(message, dict):
            raise SourceError(f"{at} must be an object, got {_kind(message)}", "wrong_type")
        role = _string(_get(message, chat["role_key"], at), chat["role_key"], at)
        if role not in chat["roles"]:
            raise SourceError(
                f"{at}: unknown chat role '{role}'; known roles: {', '.join(chat['roles'])} "
                "(map it with chat.roles in the source)",
                "unknown_role",
            )
        content = _string(_get(message, chat["content_key"], at), chat["content_key"], at)
        messages.append({"role": chat["roles"][role], "content": content})
    if chat["system"] is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": chat["system"]})
    return messages
