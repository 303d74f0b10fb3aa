"""The bounded sample of the training split a built model's tokenizer trains on (shard_data
writes it beside the shards; base_model reads it)."""

from __future__ import annotations

import heapq
import json

from scripts.data.records import split_of

# A built model's tokenizer trains on a bounded sample of the training split: the records with
# the smallest ids, each cut to SAMPLE_RECORD_CHARS, up to SAMPLE_BYTES in all. The sample file
# stays under Snakemake's 1 MB checksum limit, so a rewrite with the same bytes (an edit of a
# record outside the sample) does not rerun the model step or re-tokenize every shard.
SAMPLE_BYTES = 256 * 1024
SAMPLE_RECORD_CHARS = 2000


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
