"""Audit the tokenized examples of a run before training, and render a few with their masks.

Checks every example: at least one label; every label equals its input id or is -100; EOS is
a label at the end of each trained span (each assistant turn, or the completion); no example
is longer than tokenize.max_length; pad != eos, or EOS kept as a label where pad == eos.
tokenize_shard runs these checks on each shard as it writes it and records the result in its
manifest; this step sums them (so an edited record re-audits one shard, not the dataset) and
checks a shard itself where no such record exists. Fails when no example survived tokenization
(saying what tokenize dropped). Writes its manifest (counts per failed check, example ids) and
`examples.txt`, a readable rendering of the first examples where masked text (no loss) is shown
inside ⟪ ⟫.

    python -m scripts.audit_data --spec-json "$(cat tokenize.json)" --tokens tokens/*.parquet \
        --tokenizer results/models/KEY/model --manifest results/audit/KEY.manifest.json --examples results/audit/KEY/examples.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from scripts.common.chat import load_tokenizer_files
from scripts.common.cli import fail, json_arg, path_list
from scripts.common.files import atomic_write_text, read_json
from scripts.common.manifest import recorded_sha256, write_manifest
from scripts.compiler.spec import SpecError, check_slice
from scripts.data.audit import CHECKS, IGNORE, audit
from scripts.data.token_arrays import without_pandas

MASK_OPEN, MASK_CLOSE = "⟪", "⟫"


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


COLUMNS = ["id", "split", "input_ids", "labels", "prompt_length"]


def shard_audit(tokens: str, eos_id, max_length: int) -> tuple[int, Counter, dict, dict | str]:
    """(examples, failed per check, example ids, the shard as a manifest input) of one shard:
    from the tokenize manifest, which audited the shard and hashed it when it was written, or
    computed here for shards without one."""
    import pyarrow.parquet as pq

    manifest = Path(tokens).with_suffix(".manifest.json")  # the tokenize step's, beside it
    written = read_json(manifest) if manifest.is_file() else {}
    recorded = written.get("details", {}).get("audit")
    if recorded is not None and recorded["eos_token_id"] == eos_id:
        counts = recorded["examples"], Counter(recorded["failed"]), recorded["failed_ids"]
        return *counts, recorded_sha256(tokens, written)
    table = pq.read_table(tokens, columns=COLUMNS)
    failed, where = audit(table, eos_id, max_length)
    return table.num_rows, failed, where, tokens


def audit_shards(paths, eos_id, max_length: int) -> tuple[int, Counter, dict, list]:
    """Every shard's audit summed; up to five example ids per check, in shard order; the shards
    as manifest inputs."""
    total, failed, where, inputs = 0, Counter(), {}, []
    for path in sorted(paths):
        examples, shard_failed, shard_where, described = shard_audit(path, eos_id, max_length)
        total += examples
        failed.update(shard_failed)
        inputs.append(described)
        for check, ids in shard_where.items():
            where[check] = (where.get(check, []) + ids)[:5]
    return total, failed, where, inputs


def first_examples(paths, count: int) -> dict:
    """The first `count` examples, in shard order, as columns (reads only the shards needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, rows = [], 0
    for path in sorted(paths):
        if rows >= count:
            break
        tables.append(pq.read_table(path, columns=COLUMNS).slice(0, count - rows))
        rows += tables[-1].num_rows
    if not tables:
        return {name: [] for name in COLUMNS}
    return pa.concat_tables(tables).to_pydict()


DROP_HINTS = {
    "no_labels": "nothing to train on after the prompt: does the chat template render each message's content?",
    "too_many_tokens": "longer than tokenize.max_length",
}


def no_examples_message(paths) -> str:
    """Why an audit found no example: what tokenize_shard dropped, summed from the shards'
    manifests, with the reason behind each count."""
    dropped, shown = Counter(), None
    for path in sorted(paths):
        manifest = Path(path).with_suffix(".manifest.json")
        counts = read_json(manifest).get("counts", {}) if manifest.is_file() else {}
        dropped.update(counts.get("dropped") or {})
        shown = shown or (manifest if counts.get("dropped") else None)
    reasons = "; ".join(
        f"{n} {reason}" + (f" ({DROP_HINTS[reason]})" if reason in DROP_HINTS else "")
        for reason, n in dropped.most_common()
    )
    return (
        f"the data audit found 0 examples in {len(paths)} token shard(s), so there is nothing to "
        f"train on; tokenize dropped every record: {reasons or 'none reached it'}"
        + (f"; {shown} lists dropped records under details.drop_examples" if shown else "")
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the tokenize section as JSON")
    parser.add_argument("--tokens", nargs="+", required=True)
    parser.add_argument("--tokenizer", required=True, help="the base model folder")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--examples", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.tokens = path_list(args.tokens)
    start = time.perf_counter()
    try:
        tok = check_slice("tokenize", json_arg(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    tokenizer = load_tokenizer_files(args.tokenizer)
    eos_id, pad_id = tokenizer.ids["eos_token"], tokenizer.ids["pad_token"]
    total, failed, where, inputs = audit_shards(args.tokens, eos_id, tok["max_length"])
    if total == 0:  # whatever tokenize.audit.fail says: training would fail on an empty split
        fail(no_examples_message(args.tokens))
    shown = first_examples(args.tokens, tok["audit"]["examples"])
    atomic_write_text(args.examples, rendering(shown, total, tokenizer.decode))
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
        args.manifest,
        "audit_data",
        tok,
        inputs=inputs,
        outputs=[args.examples],
        counts={"examples": total, "failed": dict(failed)},
        details={"problems": messages, "failed_ids": where, "eos_token_id": eos_id, "pad_token_id": pad_id},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"audited {total} examples; failed {dict(failed)}", file=sys.stderr)


if __name__ == "__main__":
    without_pandas()  # this process only (not a test importing main)
    main()
