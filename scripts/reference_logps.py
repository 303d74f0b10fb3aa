"""Compute the reference model's log-probs of every preference pair once, for all runs that share them.

The reference of DPO is the run's base model (with LoRA, the base with the adapter disabled:
the same numbers). Its summed log-probs of each pair's chosen and rejected response depend on
the tokens, the base and steps.reference_slice (precision, threads, QLoRA quantization), not on
beta or the learning rate: a sweep over those reads this one file instead of running the
reference once per run. TRL's own precompute pass computes them (preference_training).

    python -m scripts.reference_logps --spec-json @slice.json --base results/models/KEY/model \
        --tokens @tokens.json --out results/reference/KEY/logps.parquet \
        --manifest results/reference/KEY/logps.manifest.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

from scripts.common.cli import fail, json_arg, path_list
from scripts.common.manifest import write_manifest
from scripts.compiler.spec import section_schema

SLICE_KEYS = {"precision", "threads", "qlora"}


def reference_spec(given: dict) -> dict:
    """The step's slice, checked: exactly its keys, and a QLoRA block as the compiler finished it
    (every setting present: this step fills no defaults of its own)."""
    if set(given) != SLICE_KEYS:
        raise ValueError(f"the reference slice needs exactly {sorted(SLICE_KEYS)}, got {sorted(given)}")
    qlora = given["qlora"]
    settings = set(section_schema("train")["properties"]["qlora"]["properties"])
    if qlora is not None and set(qlora) != settings:
        raise ValueError(
            f"the reference slice's qlora block needs exactly {sorted(settings)} (the compiler fills "
            f"them: steps.reference_slice of a compiled train section), got {sorted(qlora)}"
        )
    return dict(given)


def reference_rows(split_ids: dict, values: dict) -> list[dict]:
    """One row per pair: id, split and its two log-probs; refuses a count mismatch or a value
    that is not finite."""
    rows = []
    for split, ids in split_ids.items():
        chosen, rejected = values[split]
        if not len(ids) == len(chosen) == len(rejected):
            raise ValueError(f"{split}: {len(ids)} pairs but {len(chosen)}/{len(rejected)} log-probs")
        for pair, c, r in zip(ids, chosen, rejected):
            if not (math.isfinite(c) and math.isfinite(r)):
                raise ValueError(f"{split} pair {pair}: the reference log-probs {c}, {r} are not finite")
            rows.append(
                {"id": pair, "split": split, "ref_chosen_logps": float(c), "ref_rejected_logps": float(r)}
            )
    return rows


def training_arguments(precision: str, out_dir: str) -> dict:
    import torch

    from scripts.training.preference_training import REFERENCE_BATCH

    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=REFERENCE_BATCH,
        per_device_eval_batch_size=REFERENCE_BATCH,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the step's slice (steps.reference_slice)")
    parser.add_argument("--base", required=True, help="base model folder (the reference)")
    parser.add_argument("--tokens", nargs="+", required=True, help="token shards, or @file: a JSON list")
    parser.add_argument("--out", required=True, help="logps.parquet to write")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def pair_datasets(tokens):
    """(train pairs, validation pairs or None); an empty training split fails."""
    import datasets

    from scripts.training.preference_training import preference_dataset

    datasets.disable_progress_bars()
    train_set, eval_set = preference_dataset(tokens, "train"), preference_dataset(tokens, "validation")
    if train_set is None:
        fail(
            "the training split has no preference pairs: check data.validation_fraction and the cleaning counts"
        )
    return train_set, eval_set


def compute_rows(args, spec: dict, tokens, sets) -> tuple[list[dict], dict, str]:
    """(one row per pair, the pair ids per split, the precision): the base model's log-probs."""
    from scripts.common.modeling import load_tokenizer
    from scripts.training.preference_training import preference_table, reference_logprobs
    from scripts.training.trainable import load_trainable_model, resolve_precision

    precision = resolve_precision(spec["precision"])
    quantized = spec["qlora"] is not None
    as_trained = {
        "method": "qlora" if quantized else "full",
        "qlora": spec["qlora"],
        "gradient_checkpointing": False,
    }
    model = load_trainable_model(args.base, as_trained, precision, adapter=False)
    with tempfile.TemporaryDirectory() as scratch:
        arguments = training_arguments(precision, scratch)
        values = reference_logprobs(model, load_tokenizer(args.base), arguments, *sets, quantized)
    splits = {"train": values[0], **({"validation": values[1]} if sets[1] is not None else {})}
    split_ids = {name: preference_table(tokens, name)["id"].to_pylist() for name in splits}
    try:
        return reference_rows(split_ids, splits), split_ids, precision
    except ValueError as exc:
        fail(str(exc))


def pair_tokens(sets) -> int:
    """Tokens the reference read: each pair's prompt twice, its two responses once."""
    return sum(
        len(p) + len(c) + len(p) + len(r)
        for data in sets
        if data is not None
        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])
    )


def write_logps(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.common.files import atomic_write_bytes

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def main(argv=None):
    args = parse_args(argv)
    tokens = path_list(args.tokens)
    start = time.perf_counter()
    try:
        spec = reference_spec(json_arg(args.spec_json))
    except ValueError as exc:
        fail(str(exc))
    from scripts.common.modeling import pin_threads
    from scripts.compiler.steps import manifest_of
    from scripts.training.preference_training import REFERENCE_BATCH

    pin_threads(spec["threads"], 0)
    os.environ["TQDM_DISABLE"] = "1"  # TRL's precompute bar: a line per batch in the log
    sets = pair_datasets(tokens)
    rows, split_ids, precision = compute_rows(args, spec, tokens, sets)
    write_logps(args.out, rows)
    base_manifest = manifest_of(args.base)
    write_manifest(
        args.manifest,
        "reference_logps",
        dict(json_arg(args.spec_json)),
        inputs=[*sorted(tokens), *([base_manifest] if base_manifest else [])],
        outputs=[args.out],
        counts={
            "pairs": len(rows),
            "train_pairs": len(split_ids["train"]),
            "validation_pairs": len(split_ids.get("validation", [])),
            "tokens": pair_tokens(sets),
        },
        details={
            "batch_size": REFERENCE_BATCH,
            "precision": precision,
            "quantized": spec["qlora"] is not None,
            "mean_chosen_logp": sum(r["ref_chosen_logps"] for r in rows) / len(rows),
            "mean_rejected_logp": sum(r["ref_rejected_logps"] for r in rows) / len(rows),
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"reference log-probs of {len(rows)} pairs written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
