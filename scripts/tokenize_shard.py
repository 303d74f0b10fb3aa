"""Clean one shard and tokenize it into a parquet of input_ids and labels (masked spans are -100).

With `--data-json` (the data section), the input is a raw shard of shard_data: its records are
cleaned first (empty, too short, too long and duplicate records dropped and counted by reason,
each kept record given its split; scripts/data/cleaning.py), in the same process, so a shard
costs one job. Without it, the records are taken as they are (each with its split).
Text: trained whole. Prompt/completion: the prompt is tokenized with the tokenizer's special
tokens (BOS), the completion without; EOS is appended and kept as a label. Chat: rendered with
the chat template and tokenized span by span (special tokens come from the template), so
`prompt_length` (the rendered generation prompt of the last assistant turn) is a token
boundary. Every text of the shard goes through one batched call of the Rust tokenizer. A chat
template that fails or runs past its budget ends the step naming the template (inline, its file
or the tokenizer's), the record (line in the shard and id) and the reason. With `--previous`
(shard_data's map of rebuilt shards to the ones they replace), the rows of unchanged records
come from the replaced shard's tokens (scripts/data/token_reuse.py): an edit tokenizes what
it changed.

    python -m scripts.tokenize_shard --spec-json "$(cat tokenize.json)" --data-json "$(cat data.json)" \
        --input raw/SHA.jsonl --tokenizer results/models/KEY/model --out tokens/SHA.parquet --manifest tokens/SHA.manifest.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from scripts.common.chat import TemplateError, chat_segments, compile_template, load_tokenizer_files
from scripts.common.cli import fail, json_arg
from scripts.common.manifest import write_manifest
from scripts.compiler.spec import SpecError, check_slice
from scripts.data.audit import audit
from scripts.data.cleaning import clean_records
from scripts.data.token_arrays import (
    assemble_arrays,
    prompt_completion_columns,
    token_table,
    without_pandas,
    write_parquet,
)
from scripts.data.token_reuse import merge_rows, previous_files, remove_stale_tokens, reuse_plan

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
        self.line, self.record, self.reason = line, record, exc

    def in_file(self, numbers: list[int]) -> RecordError:
        """The same error with the line numbered in the shard's file (`numbers`: the file line
        of each record tokenized, which cleaning made a subset of the file's)."""
        return RecordError(numbers[self.line - 1], self.record, self.reason)


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
    eos_id = tokenizer.ids["eos_token"]
    eos = [eos_id] if tok["add_eos"] and eos_id is not None else []
    if records and all(
        "completion" in r and "label" not in r and isinstance(r["prompt"], str) for r in records
    ):
        return prompt_completion_columns(records, tokenizer, tok, eos)
    template = compile_template(template_source, template_name) if template_source else None
    plans = plan_records(records, tok, template, tokenizer.special)
    pairs = bool(records) and "chosen" in records[0]
    labelled = bool(records) and "label" in records[0]
    extra = (PAIR_COLUMNS if pairs else ()) + (LABEL_COLUMNS if labelled else ())
    columns = {name: [] for name in COLUMNS + extra}
    dropped, truncated, limit = Counter(), 0, tok["max_length"]
    flat = [side for record_plans in plans for side in record_plans]
    if not pairs and not labelled:  # one sequence per record: numpy assembly, same rows
        return array_columns(records, flat, encode_all(flat, tokenizer), eos, tok)
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


def array_columns(records: list[dict], plans: list, encoded: list, eos: list[int], tok: dict):
    """tokenize_records' result for records of one sequence each, assembled by token_arrays."""
    eos_for = [[] if "messages" in record else eos for record in records]
    ids, labels, prompt_length, kept, dropped, truncated = assemble_arrays(plans, encoded, eos_for, tok)
    columns = {"id": [], "split": [], "input_ids": ids, "labels": labels, "prompt_length": prompt_length}
    columns |= {"prompt": [], "reference": []}
    for i in kept.tolist():
        record, plan = records[i], plans[i]
        columns["id"].append(record["id"])
        columns["split"].append(record["split"])
        columns["prompt"].append(plan[1])
        columns["reference"].append(plan[2])
    return columns, dropped, truncated


def plan_source(record: dict) -> dict:
    """The record whose shape decides EOS handling (a pair's prompt decides for both sides)."""
    return {"messages": record["prompt"]} if isinstance(record.get("prompt"), list) else record


def read_lines(path: str) -> tuple[list[str], list[int]]:
    """The shard's non-blank lines and their line numbers in the file."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    numbers = [n for n, line in enumerate(lines, start=1) if line.strip()]
    return [lines[n - 1] for n in numbers], numbers


def parse_and_clean(lines: list[str], numbers: list[int], data: dict | None):
    """(lines, records, line numbers, cleaning drops, drop examples) of the kept records; with
    no data section every record is kept as it is."""
    records = [json.loads(line) for line in lines]
    if data is None:
        return lines, records, numbers, Counter(), {}
    kept_at, kept, dropped, examples = clean_records(records, data)
    return [lines[i] for i in kept_at], kept, [numbers[i] for i in kept_at], dropped, examples


def tokenize_whole(lines, numbers, data, tok, tokenizer, source, name):
    """(token table, drops by reason, drop examples, truncated) of every record of the shard."""
    lines, records, numbers, cleaned, examples = parse_and_clean(lines, numbers, data)
    try:
        columns, dropped, truncated = tokenize_records(records, tokenizer, tok, source, name)
    except RecordError as exc:
        raise exc.in_file(numbers) from None
    return token_table(columns), cleaned + dropped, examples, truncated


def tokenize_reusing(args, lines, data, tok, tokenizer, source, name):
    """tokenize_whole's result plus the rows reused, where the shard replaces an earlier version
    (scripts/data/token_reuse.py): its unchanged lines are neither parsed nor tokenized again.
    None: no earlier version, or a record fails (tokenized whole, so the message names its line)."""
    previous = previous_files(args.previous, args.input, args.out)
    if not previous:
        return None
    old, reuse = reuse_plan(lines, *previous, tok)
    rest = [i for i, row in enumerate(reuse) if row < 0]
    fresh_lines, records, fresh_at, cleaned, examples = parse_and_clean([lines[i] for i in rest], rest, data)
    try:
        columns, dropped, truncated = tokenize_records(records, tokenizer, tok, source, name)
    except TemplateError:
        return None
    table = merge_rows(old, token_table(columns), reuse, fresh_at, records, columns["id"])
    if table is None:
        return None
    return table, cleaned + dropped, examples, truncated, len(lines) - len(rest)


def flat_values(table, column: str):
    return table.column(column).combine_chunks().flatten().to_numpy()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the tokenize section as JSON")
    parser.add_argument("--input", required=True, help="a shard of records (JSONL)")
    parser.add_argument(
        "--data-json", help="the data section as JSON (or @file): clean the shard's records first"
    )
    parser.add_argument("--tokenizer", required=True, help="the base model folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument(
        "--previous", help="JSON map shard -> the shard its bucket held before (rows are reused from it)"
    )
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Snakemake gives each job one core: the tokenizer's own threads only compete with the other
    # jobs (a third more CPU time for the same ids).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    try:
        tok = check_slice("tokenize", json_arg(args.spec_json))
        data = check_slice("data", json_arg(args.data_json)) if args.data_json else None
        lines, numbers = read_lines(args.input)
        tokenizer = load_tokenizer_files(args.tokenizer)
        source, name = template_text(tok, tokenizer)
        done = tokenize_reusing(args, lines, data, tok, tokenizer, source, name)
        if done is None:
            done = (*tokenize_whole(lines, numbers, data, tok, tokenizer, source, name), 0)
        table, dropped, drop_examples, truncated, reused = done
    except RecordError as exc:
        fail(f"{args.input}:{exc}")
    except (SpecError, TemplateError, OSError) as exc:
        fail(f"{args.input}: {exc}")
    write_parquet(table, args.out)
    eos_id = tokenizer.ids["eos_token"]
    failed, where = audit(table, eos_id, tok["max_length"])
    template_sha = hashlib.sha256(source.encode()).hexdigest() if source else None
    rows = len(table)
    train = table.column("split").to_pylist().count("train")
    inputs = [args.input, f"{args.tokenizer}/tokenizer.json"]
    write_manifest(
        args.manifest,
        "tokenize_shard",
        tok,
        inputs=[p for p in [*inputs, tok["chat_template_file"]] if p and Path(p).is_file()],
        outputs=[args.out],
        counts={
            "records_in": len(lines),
            "examples": rows,
            "train": train,
            "validation": rows - train,
            "tokens": len(flat_values(table, "input_ids")),
            "label_tokens": int((flat_values(table, "labels") != IGNORE).sum()),
            "dropped": dict(dropped),
            "truncated": truncated,
        },
        details={
            "drop_examples": drop_examples,
            "max_length": tok["max_length"],
            "chat_template_sha256": template_sha,
            "audit": {"examples": rows, "failed": dict(failed), "failed_ids": where, "eos_token_id": eos_id},
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    stale = remove_stale_tokens(args.input, args.out, args.previous)
    print(
        f"{rows} examples of {len(lines)} records ({reused} reused); dropped {dict(dropped)}; "
        f"truncated {truncated}; {stale} stale token files removed",
        file=sys.stderr,
    )


if __name__ == "__main__":
    without_pandas()  # this process only (not a test importing main)
    main()
