"""Audit the tokenized examples of a run before training, and render a few with their masks.

Checks every example: at least one label; every label equals its input id or is -100; EOS is
a label at the end of each trained span (each assistant turn, or the completion); no example
is longer than tokenize.max_length; pad != eos, or EOS kept as a label where pad == eos.
Writes `audit.json` (a manifest: counts per failed check, example ids) and `examples.txt`, a
readable rendering where masked text (no loss) is shown inside ⟪ ⟫.

    python -m scripts.audit_data --spec-json "$(cat tokenize.json)" --tokens tokens/*.parquet \
        --tokenizer results/models/KEY/model --report audit/audit.json --examples audit/examples.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from scripts.common.chat import load_tokenizer_files
from scripts.common.files import atomic_write_text
from scripts.common.manifest import fail, write_manifest
from scripts.common.spec import SpecError, check_slice

IGNORE = -100
MASK_OPEN, MASK_CLOSE = "⟪", "⟫"
CHECKS = {
    "no_labels": "has no token with a label (nothing to learn)",
    "label_mismatch": "has a label that is neither -100 nor its input id",
    "no_eos_at_turn_end": "has a trained span (assistant turn or completion) without EOS as a label",
    "too_long": "is longer than tokenize.max_length",
}


def problem_masks(ids, labels, lengths, eos_id, max_length: int) -> dict:
    """Per-example boolean arrays, one per check, from flat token arrays (vectorised: 1M examples
    take about a second)."""
    import numpy as np

    n = len(lengths)
    example = np.repeat(np.arange(n), lengths)
    labelled = labels != IGNORE
    first = np.zeros(len(labels), bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first[offsets[lengths > 0]] = True
    previous = np.concatenate([[False], labelled[:-1]]) & ~first
    last = np.concatenate([first[1:], [True]])
    following = np.concatenate([labelled[1:], [False]]) & ~last
    starts, ends = np.flatnonzero(labelled & ~previous), np.flatnonzero(labelled & ~following)
    eos = labelled & (labels == (-1 if eos_id is None else eos_id))
    counts = np.cumsum(eos)
    without_eos = (counts[ends] - counts[starts] + eos[starts]) == 0
    return {
        "no_labels": np.bincount(example, weights=labelled, minlength=n) == 0,
        "label_mismatch": np.bincount(example, weights=labelled & (labels != ids), minlength=n) > 0,
        "no_eos_at_turn_end": np.bincount(example[starts[without_eos]], minlength=n) > 0,
        "too_long": lengths > max_length,
    }


def audit(table, eos_id, max_length: int) -> tuple[Counter, dict]:
    """(failed examples per check, up to five example ids per check) of a token table."""
    import numpy as np
    import pyarrow.compute as pc

    ids = table.column("input_ids").combine_chunks()
    labels = table.column("labels").combine_chunks()
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(lengths):
        return Counter(), {}
    masks = problem_masks(ids.flatten().to_numpy(), labels.flatten().to_numpy(), lengths, eos_id, max_length)
    row_ids = table.column("id").to_pylist()
    failed = Counter({name: int(mask.sum()) for name, mask in masks.items() if mask.any()})
    where = {name: [row_ids[i] for i in np.flatnonzero(masks[name])[:5]] for name in failed}
    return failed, where


def render_example(ids: list[int], labels: list[int], decode) -> str:
    """The example's text with masked spans inside ⟪ ⟫."""
    out, masked_run, current = [], None, []
    for token, label in zip(ids, labels):
        masked = label == IGNORE
        if masked != masked_run and current:
            text = decode(current)
            out.append(f"{MASK_OPEN}{text}{MASK_CLOSE}" if masked_run else text)
            current = []
        masked_run = masked
        current.append(token)
    if current:
        text = decode(current)
        out.append(f"{MASK_OPEN}{text}{MASK_CLOSE}" if masked_run else text)
    return "".join(out)


def rendering(rows: dict, total: int, decode) -> str:
    count = len(rows["id"])
    lines = [f"{count} of {total} examples; text inside {MASK_OPEN} {MASK_CLOSE} is masked (label -100)."]
    for i in range(count):
        ids, labels = rows["input_ids"][i], rows["labels"][i]
        trained = len(labels) - labels.count(IGNORE)
        lines += [
            "",
            f"=== {rows['id'][i]} ({rows['split'][i]}): {len(ids)} tokens, {trained} trained, "
            f"prompt_length {rows['prompt_length'][i]} ===",
            render_example(ids, labels, decode),
            "--- tokens: id label text ---",
            " ".join(f"{t}:{'-' if x == IGNORE else 'L'}:{decode([t])!r}" for t, x in zip(ids, labels)),
        ]
    return "\n".join(lines) + "\n"


def read_tokens(paths):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["id", "split", "input_ids", "labels", "prompt_length"]
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in sorted(paths)])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the tokenize section as JSON")
    parser.add_argument("--tokens", nargs="+", required=True)
    parser.add_argument("--tokenizer", required=True, help="the base model folder")
    parser.add_argument("--report", required=True)
    parser.add_argument("--examples", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        tok = check_slice("tokenize", json.loads(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    tokenizer = load_tokenizer_files(args.tokenizer)
    table = read_tokens(args.tokens)
    eos_id, pad_id = tokenizer.ids["eos_token"], tokenizer.ids["pad_token"]
    failed, where = audit(table, eos_id, tok["max_length"])
    shown = table.slice(0, tok["audit"]["examples"]).to_pydict()
    atomic_write_text(args.examples, rendering(shown, table.num_rows, tokenizer.decode))
    messages = [
        f"{n} examples {CHECKS[c]} (for example {', '.join(where[c])})" for c, n in sorted(failed.items())
    ]
    if pad_id is not None and pad_id == eos_id:
        print("note: pad == eos; labels keep EOS explicitly, so padding does not mask it", file=sys.stderr)
    if messages and tok["audit"]["fail"]:
        fail(
            "the data audit failed:\n"
            + "\n".join(messages)
            + f"\nsee {args.examples} for how examples are masked; fix the data or the chat template "
            "(or set tokenize.audit.fail: false to only report)"
        )
    write_manifest(
        args.report,
        "audit_data",
        tok,
        inputs=args.tokens,
        outputs=[args.examples],
        counts={"examples": table.num_rows, "failed": dict(failed)},
        details={"problems": messages, "failed_ids": where, "eos_token_id": eos_id, "pad_token_id": pad_id},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"audited {table.num_rows} examples; failed {dict(failed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
