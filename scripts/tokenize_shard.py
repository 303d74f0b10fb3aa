"""Tokenize one cleaned shard into a parquet of input_ids and labels (prompt masked to -100).

The prompt is tokenized with the tokenizer's special tokens (BOS), the completion without,
and EOS is appended and kept as a label so the model learns to stop. Generation at
evaluation feeds exactly the prompt ids, so training and inference agree at the boundary.

    python -m scripts.tokenize_shard --spec-json "$(cat tokenize.json)" --input clean/SHA.jsonl \
        --tokenizer results/models/KEY/model --out tokens/SHA.parquet --manifest tokens/SHA.manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from scripts.common.files import read_jsonl
from scripts.common.manifest import fail, write_manifest
from scripts.common.spec import SpecError, check_slice

IGNORE = -100


def encode_record(record: dict, tokenizer, tok: dict) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, prompt length) of one record."""
    eos = [tokenizer.eos_token_id] if tok["add_eos"] else []
    if "text" in record:
        ids = tokenizer(record["text"])["input_ids"] + eos
        return ids, list(ids), 0
    prompt = tokenizer(record["prompt"])["input_ids"]
    completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"] + eos
    return prompt + completion, [IGNORE] * len(prompt) + completion, len(prompt)


def tokenize_records(records: list[dict], tokenizer, tok: dict):
    """Rows for the parquet table plus counts (dropped or truncated overlong examples)."""
    rows, dropped, truncated = [], Counter(), 0
    for record in records:
        ids, labels, prompt_len = encode_record(record, tokenizer, tok)
        if len(ids) > tok["max_length"]:
            if tok["overlong"] == "drop":
                dropped["too_many_tokens"] += 1
                continue
            ids, labels, truncated = ids[: tok["max_length"]], labels[: tok["max_length"]], truncated + 1
        if all(label == IGNORE for label in labels):
            dropped["no_labels"] += 1
            continue
        rows.append(
            {
                "id": record["id"],
                "split": record["split"],
                "input_ids": ids,
                "labels": labels,
                "prompt_length": prompt_len,
                "prompt": record.get("prompt", ""),
                "reference": record.get("completion", record.get("text", "")),
            }
        )
    return rows, dropped, truncated


def write_parquet(rows: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.common.files import atomic_write_bytes

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
            ("labels", pa.list_(pa.int32())),
            ("prompt_length", pa.int32()),
            ("prompt", pa.string()),
            ("reference", pa.string()),
        ]
    )
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the tokenize section as JSON")
    parser.add_argument("--input", required=True)
    parser.add_argument("--tokenizer", required=True, help="the base model folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        tok = check_slice("tokenize", json.loads(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    from scripts.common.modeling import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    rows, dropped, truncated = tokenize_records(read_jsonl(args.input), tokenizer, tok)
    write_parquet(rows, args.out)
    train = sum(r["split"] == "train" for r in rows)
    write_manifest(
        args.manifest,
        "tokenize_shard",
        tok,
        inputs=[args.input, f"{args.tokenizer}/tokenizer.json"],
        outputs=[args.out],
        counts={
            "examples": len(rows),
            "train": train,
            "validation": len(rows) - train,
            "tokens": sum(len(r["input_ids"]) for r in rows),
            "label_tokens": sum(sum(x != IGNORE for x in r["labels"]) for r in rows),
            "dropped": dict(dropped),
            "truncated": truncated,
        },
        details={"max_length": tok["max_length"]},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"{len(rows)} examples; dropped {dict(dropped)}; truncated {truncated}", file=sys.stderr)


if __name__ == "__main__":
    main()
