"""Reading sources into records, normalising them, and hashing them into shards and splits.

A record has one of five shapes: `text`; `prompt` and `completion` (alpaca sources become
this shape, with the alpaca prompt); `messages`, a list of {role, content} turns; a preference
pair, `prompt`, `chosen` and `rejected`; or a KTO record, `prompt`, `completion` and a boolean
`label` (scripts/data/preference_records.py).

Normalising keeps the text a model is trained on equal to the text a client will send: NFC,
CRLF -> LF and control characters removed, nothing else (no whitespace is stripped or collapsed:
a prompt's trailing newline, a template's layout and a completion's indentation are part of
the format). A record's id is the hash of its dedupe key, which with `normalize_whitespace` also
collapses spaces, so records that differ only in spacing share an id and a shard (one is kept),
and the train/validation split of a record never changes when other records do.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from scripts.data.preference_records import map_labelled, map_pair, pair_texts
from scripts.data.source_rows import SourceError, _get, _kind, _string, map_messages

_SPACES = re.compile(r"[ \t\u00a0]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The alpaca prompt (as in the Stanford Alpaca repository and axolotl's `type: alpaca`).
ALPACA = "Below is an instruction that describes a task{more}. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n{input}### Response:\n"
ALPACA_MORE = ", paired with an input that provides further context"


def map_fields(row, source: dict, where: str) -> dict:
    """Map one source row onto the record shape its `fields` choose."""
    if not isinstance(row, dict):
        raise SourceError(f"{where}: expected an object, got {_kind(row)}", "wrong_type")
    fields = source["fields"]
    if "chosen" in fields:  # a preference pair (scripts/data/preference_records.py)
        return map_pair(row, source, where)
    if "label" in fields:  # a KTO record (scripts/data/preference_records.py)
        return map_labelled(row, source, where)
    if "messages" in fields:
        column = fields["messages"]
        return {"messages": map_messages(_get(row, column, where), source["chat"], column, where)}
    if "instruction" in fields:
        values = {
            name: _string(_get(row, col, where, optional=name == "input"), col, where)
            for name, col in fields.items()
        }
        extra = values.get("input", "").strip()
        prompt = ALPACA.format(
            more=ALPACA_MORE if extra else "",
            instruction=values["instruction"],
            input=f"### Input:\n{extra}\n\n" if extra else "",
        )
        return {"prompt": prompt, "completion": values["output"]}
    return {name: _string(_get(row, col, where), col, where) for name, col in fields.items()}


def normalize_text(text: str) -> str:
    """NFC, no control characters, CRLF -> LF: what is stored. Spaces and newlines stay as they
    are (a prompt's trailing newline or a completion's indentation is part of its format)."""
    if text.isascii() and text.isprintable():
        return text  # the common case, already normal: no regex, no NFC pass
    return _CONTROL.sub("", unicodedata.normalize("NFC", text).replace("\r\n", "\n"))


def collapse_spaces(text: str) -> str:
    """One space for runs of spaces/tabs, line ends stripped: for dedupe keys, never stored."""
    if text.isprintable() and "  " not in text and text.strip() == text:
        return text
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()


class Record(dict):
    """A normalised record, as stored, carrying `key`: the form its id and dedupe compare."""

    __slots__ = ("key",)


def _map_texts(record: dict, fix) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, list):  # messages, or a pair's turns
            value = [{"role": m["role"], "content": fix(m["content"])} for m in value]
        elif isinstance(value, bool):  # a KTO record's label
            pass
        else:
            value = fix(value)
        out[key] = value
    return out


def normalize_record(record: dict, collapse_whitespace: bool = True) -> Record:
    """The record to store (normalize_text on every text); with `collapse_whitespace` its key
    also collapses spaces, so records that differ only in spacing get one id."""
    out = Record(_map_texts(record, normalize_text))
    out.key = _map_texts(out, collapse_spaces) if collapse_whitespace else out
    return out


def record_texts(record: dict) -> list[str]:
    """Every text field of a record (message contents for chats) as the cleaning checks count
    it: without surrounding whitespace, so a whitespace-only field is empty."""
    if "messages" in record:
        return [m["content"].strip() for m in record["messages"]]
    if "chosen" in record:
        return pair_texts(record)
    return [record[k].strip() for k in ("text", "prompt", "completion") if k in record]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def record_id(normalized: dict) -> str:
    """Hash of the record's key (normalize_record's), else of the record itself, as canonical_json
    writes it (one reused encoder: json.dumps builds one per call)."""
    return hashlib.sha256(_CANONICAL(getattr(normalized, "key", normalized)).encode()).hexdigest()[:16]


def bucket(rid: str, num_shards: int) -> int:
    return int(rid, 16) % num_shards


def unit_hash(seed, rid: str) -> float:
    """A record's stable pseudo-random number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{rid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_validation(rid: str, fraction: float, seed: int) -> bool:
    """Stable split: a record's side depends only on its own content and the seed."""
    return unit_hash(seed, rid) < fraction


def prompt_group(pair: dict) -> str:
    """A pair's split key: its prompt's hash, so the pairs of one prompt share a split."""
    return hashlib.sha256(_CANONICAL(pair["prompt"]).encode()).hexdigest()[:16]


def split_of(record: dict, data: dict) -> str:
    """The source's forced split, else by hash (copies from `weight` follow their original)."""
    forced = record.get("split", "auto")
    if forced != "auto":
        return forced
    grouped = "chosen" in record or "label" in record  # pairs and KTO records: one split per prompt
    rid = prompt_group(record) if grouped else record.get("group", record["id"])
    return "validation" if is_validation(rid, data["validation_fraction"], data["split_seed"]) else "train"
