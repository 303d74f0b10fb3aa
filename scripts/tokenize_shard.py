"""Tokenize one cleaned shard into a parquet of input_ids and labels (masked spans are -100).

Text: trained whole. Prompt/completion: the prompt is tokenized with the tokenizer's special
tokens (BOS), the completion without; EOS is appended and kept as a label. Chat: rendered with
the chat template and tokenized span by span (special tokens come from the template), so
`prompt_length` (the rendered generation prompt of the last assistant turn) is a token
boundary. Every text of the shard goes through one batched call of the Rust tokenizer. A chat
template that fails or runs past its budget ends the step naming the template (inline, its file
or the tokenizer's), the record (line in the shard and id) and the reason.

    python -m scripts.tokenize_shard --spec-json "$(cat tokenize.json)" --input clean/SHA.jsonl \
        --tokenizer results/models/KEY/model --out tokens/SHA.parquet --manifest tokens/SHA.manifest.json
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

from scripts.common.audit import audit
from scripts.common.chat import TemplateError, chat_segments, compile_template, load_tokenizer_files
from scripts.common.cli import fail, json_arg
from scripts.common.files import read_jsonl
from scripts.common.manifest import write_manifest
from scripts.common.spec import SpecError, check_slice

IGNORE = -100
COLUMNS = ("id", "split", "input_ids", "labels", "prompt_length", "prompt", "reference")
# Preference pairs also keep the rejected response's ids (after the prompt, EOS included); the
# chosen response is input_ids[prompt_length:], so SFT and evaluation read a pair as prompt+chosen.
PAIR_COLUMNS = ("rejected_ids",)
# KTO records also keep their label (true: a desirable completion), a boolean column.
LABEL_COLUMNS = ("label",)


def template_text(tok: dict, tokenizer, workdir: Path = Path(".")) -> tuple[str | None, str]:
    """(the chat template's text or None, what to call it in messages)."""
    if tok["chat_template"]:
        return tok["chat_template"], "the chat template tokenize.chat_template (inline)"
    if tok["chat_template_file"]:
        text = (workdir / tok["chat_template_file"]).read_text(encoding="utf-8")
        return text, f"the chat template tokenize.chat_template_file {tok['chat_template_file']!r}"
    where = tokenizer.chat_template_source or "the tokenizer folder"
    return tokenizer.chat_template, f"the tokenizer's own chat template ({where})"


class RecordError(TemplateError):
    """A record the chat template cannot render: the message starts with its line and id."""

    def __init__(self, line: int, record: dict, exc: Exception):
        super().__init__(f"{line}: record {record.get('id')}: {exc}")


def plan_record(record: dict, tok: dict, template, special: dict):
    """(segments [(text, trained, in_prompt, add_special)], prompt, reference) of one record."""
    if "text" in record:
        return [(record["text"], True, False, True)], "", record["text"]
    if "prompt" in record:
        segments = [
            (record["prompt"], tok["loss_on"] == "all", True, True),
            (record["completion"], True, False, False),
        ]
        return segments, record["prompt"], record["completion"]
    if template is None:
        raise TemplateError(
            "chat records need a chat template: the tokenizer has none; set tokenize.chat_template "
            "(inline Jinja) or tokenize.chat_template_file"
        )
    segments, prompt, reference = chat_segments(template, record["messages"], special, tok["loss_on"])
    return [(text, trained, in_prompt, False) for text, trained, in_prompt in segments], prompt, reference


def encode_all(plans: list, tokenizer) -> list[list[list[int]]]:
    """Token ids of every segment, from two batched calls (with and without special tokens)."""
    groups = {True: [], False: []}
    for segments, _, _ in plans:
        for text, _, _, special in segments:
            groups[special].append(text)
    encoded = {
        flag: iter(tokenizer.encode(texts, flag)) if texts else iter(()) for flag, texts in groups.items()
    }
    return [[next(encoded[special]) for _, _, _, special in segments] for segments, _, _ in plans]


def assemble(segments, ids_per_segment, eos: list[int]) -> tuple[list[int], list[int], int]:
    ids, labels, prompt_length = [], [], 0
    for (_, trained, in_prompt, _), seg_ids in zip(segments, ids_per_segment):
        ids += seg_ids
        labels += seg_ids if trained else [IGNORE] * len(seg_ids)
        if in_prompt:
            prompt_length = len(ids)
    return ids + eos, labels + eos, prompt_length


def sides(record: dict) -> list[dict]:
    """The sequences a record is tokenized as: itself, or for a preference pair the prompt with
    the chosen response and the prompt with the rejected one (each shaped like an SFT record)."""
    if "chosen" not in record:
        return [record]
    prompt = record["prompt"]
    if isinstance(prompt, list):
        return [{"messages": prompt + record[side]} for side in ("chosen", "rejected")]
    return [{"prompt": prompt, "completion": record[side]} for side in ("chosen", "rejected")]


def plan_records(records: list[dict], tok: dict, template, special: dict) -> list:
    """plan_record of each side of each record (sides); a template error names the record's
    line in the shard and id."""
    plans = []
    for line, record in enumerate(records, start=1):
        try:
            plans.append([plan_record(side, tok, template, special) for side in sides(record)])
        except TemplateError as exc:
            raise RecordError(line, record, exc) from None
    return plans


def tokenize_records(
    records: list[dict],
    tokenizer,
    tok: dict,
    template_source: str | None = None,
    template_name: str = "the chat template",
):
    """Columns for the parquet table plus counts (dropped or truncated overlong examples)."""
    template = compile_template(template_source, template_name) if template_source else None
    plans = plan_records(records, tok, template, tokenizer.special)
    eos_id = tokenizer.ids["eos_token"]
    eos = [eos_id] if tok["add_eos"] and eos_id is not None else []
    pairs = bool(records) and "chosen" in records[0]
    labelled = bool(records) and "label" in records[0]
    extra = (PAIR_COLUMNS if pairs else ()) + (LABEL_COLUMNS if labelled else ())
    columns = {name: [] for name in COLUMNS + extra}
    dropped, truncated, limit = Counter(), 0, tok["max_length"]
    flat = [side for record_plans in plans for side in record_plans]
    encoded = iter(encode_all(flat, tokenizer))
    for line, (record, record_plans) in enumerate(zip(records, plans), start=1):
        seqs = []
        for plan in record_plans:
            chat = "messages" in plan_source(record)
            seqs.append(assemble(plan[0], next(encoded), [] if chat else eos))
        if max(len(ids) for ids, _, _ in seqs) > limit:
            if tok["overlong"] == "drop":
                dropped["too_many_tokens"] += 1
                continue
            seqs = [(ids[:limit], labels[:limit], min(length, limit)) for ids, labels, length in seqs]
            truncated += 1
        ids, labels, prompt_length = seqs[0]
        if all(label == IGNORE for label in labels):
            dropped["no_labels"] += 1
            continue
        if pairs:
            rejected_ids, _, rejected_prompt = seqs[1]
            if rejected_ids[:rejected_prompt] != ids[:prompt_length]:
                raise RecordError(
                    line, record, TemplateError("the prompt tokenizes differently before each response")
                )
            columns["rejected_ids"].append(rejected_ids[rejected_prompt:])
        if labelled:
            columns["label"].append(record["label"])
        plan = record_plans[0]
        for name, value in zip(
            COLUMNS, (record["id"], record["split"], ids, labels, prompt_length, *plan[1:])
        ):
            columns[name].append(value)
    return columns, dropped, truncated


def plan_source(record: dict) -> dict:
    """The record whose shape decides EOS handling (a pair's prompt decides for both sides)."""
    return {"messages": record["prompt"]} if isinstance(record.get("prompt"), list) else record


def write_parquet(columns: dict, path: str):
    """Write the token table atomically; returns it (the audit reads it next)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.common.files import atomic_write_bytes

    ids = pa.list_(pa.int32())
    types = {
        "input_ids": ids,
        "labels": ids,
        "rejected_ids": ids,
        "prompt_length": pa.int32(),
        "label": pa.bool_(),
    }
    table = pa.table(
        {name: pa.array(values, type=types.get(name, pa.string())) for name, values in columns.items()}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return table


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
        tok = check_slice("tokenize", json_arg(args.spec_json))
        tokenizer = load_tokenizer_files(args.tokenizer)
        source, name = template_text(tok, tokenizer)
        columns, dropped, truncated = tokenize_records(read_jsonl(args.input), tokenizer, tok, source, name)
    except RecordError as exc:
        fail(f"{args.input}:{exc}")
    except (SpecError, TemplateError, OSError) as exc:
        fail(f"{args.input}: {exc}")
    table = write_parquet(columns, args.out)
    eos_id = tokenizer.ids["eos_token"]
    failed, where = audit(table, eos_id, tok["max_length"])
    template_sha = hashlib.sha256(source.encode()).hexdigest() if source else None
    rows = len(columns["id"])
    train = sum(split == "train" for split in columns["split"])
    inputs = [args.input, f"{args.tokenizer}/tokenizer.json"]
    write_manifest(
        args.manifest,
        "tokenize_shard",
        tok,
        inputs=[p for p in [*inputs, tok["chat_template_file"]] if p and Path(p).is_file()],
        outputs=[args.out],
        counts={
            "examples": rows,
            "train": train,
            "validation": rows - train,
            "tokens": sum(map(len, columns["input_ids"])),
            "label_tokens": sum(len(labels) - labels.count(IGNORE) for labels in columns["labels"]),
            "dropped": dict(dropped),
            "truncated": truncated,
        },
        details={
            "max_length": tok["max_length"],
            "chat_template_sha256": template_sha,
            "audit": {"examples": rows, "failed": dict(failed), "failed_ids": where, "eos_token_id": eos_id},
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"{rows} examples; dropped {dict(dropped)}; truncated {truncated}", file=sys.stderr)


if __name__ == "__main__":
    main()
