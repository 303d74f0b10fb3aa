"""Merge the trained adapter into the base (or take the full fine-tune) and save safetensors.

Writes a folder that plain transformers loads: weights in the export dtype (sharded above
export.max_shard_size, with an index), config, generation_config with eos/pad ids, and the
tokenizer used in training with its chat template and special tokens, checked after saving.
LoRA and QLoRA adapters alike are merged onto the base reloaded in fp32, never onto 4-bit
weights; the result is then cast to the export dtype.

    python -m scripts.merge_model --spec-json '{"dtype": "fp32", "max_shard_size": "5GB"}' \
        --method lora --base results/models/KEY/model --tuned results/runs/demo/train/model \
        --out results/runs/demo/merged --manifest results/runs/demo/merged.manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scripts.common.cli import fail
from scripts.common.manifest import write_manifest
from scripts.common.spec import SpecError, check_slice

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "chat_template.jinja")


def merge_spec(given: dict) -> dict:
    """The merge's part of the export section, validated against the export schema, defaults filled."""
    export = check_slice("export", {"smoke_prompts": [{"prompt": "(not used by the merge)"}], **given})
    return {key: export[key] for key in ("dtype", "max_shard_size")}


def merged_model(base: str, tuned: str, method: str, dtype: str):
    """The tuned model as one plain transformers model, in `dtype` (merge done in fp32)."""
    from scripts.common.modeling import load_tuned_model, torch_dtype

    if method == "full":
        model = load_tuned_model(base, tuned, "full", "fp32")
    else:
        # a QLoRA adapter is an ordinary LoRA adapter: merge it onto full-precision base
        # weights (merging into 4-bit weights would bake in the quantisation error)
        model = load_tuned_model(base, tuned, "lora", "fp32").merge_and_unload()
    return model.to(torch_dtype(dtype))


def generation_ids(current: dict, bos: int | None, eos: int | None, pad: int | None) -> dict:
    """bos/eos/pad ids for generation_config: the base's eos ids kept, the tokenizer's added."""
    eos_ids = current.get("eos_token_id")
    eos_ids = [] if eos_ids is None else list(eos_ids) if isinstance(eos_ids, list) else [eos_ids]
    if eos is not None and eos not in eos_ids:
        eos_ids.append(eos)
    first_eos = eos_ids[0] if eos_ids else None
    return {
        "bos_token_id": current.get("bos_token_id") if bos is None else bos,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None),
        "pad_token_id": pad if pad is not None else current.get("pad_token_id", first_eos),
    }


def tokenizer_differences(trained, saved) -> list[str]:
    """What changed between the training tokenizer and the saved one (should be nothing)."""
    checks = {
        "chat_template": lambda t: t.chat_template,
        "special tokens": lambda t: {k: str(v) for k, v in t.special_tokens_map.items()},
        "special token ids": lambda t: (t.bos_token_id, t.eos_token_id, t.pad_token_id),
        "vocabulary size": len,
    }
    return [name for name, get in checks.items() if get(trained) != get(saved)]


def save_merged(model, tokenizer, out: str, max_shard_size: str) -> None:
    ids = generation_ids(
        model.generation_config.to_dict(),
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec-json", required=True, help='{"dtype": ..., "max_shard_size": ...} from the export section'
    )
    parser.add_argument("--method", required=True, choices=["full", "lora", "qlora"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--tuned", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        spec = merge_spec(json.loads(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    if args.method != "full" and not (Path(args.tuned) / "adapter_config.json").is_file():
        fail(f"{args.tuned} holds no adapter_config.json, but train.method is {args.method!r}: retrain")
    from scripts.common.modeling import load_tokenizer, training_tokenizer_dir

    tok_dir = training_tokenizer_dir(args.base, args.tuned)
    tokenizer = load_tokenizer(tok_dir)
    model = merged_model(args.base, args.tuned, args.method, spec["dtype"])
    save_merged(model, tokenizer, args.out, spec["max_shard_size"])
    changed = tokenizer_differences(tokenizer, load_tokenizer(args.out))
    if changed:
        fail(f"the tokenizer saved in {args.out} differs from the training tokenizer in {tok_dir}: {changed}")
    shards = sorted(p.name for p in Path(args.out).glob("*.safetensors"))
    write_manifest(
        args.manifest,
        "merge_model",
        spec,
        inputs=[Path(tok_dir, name) for name in TOKENIZER_FILES if Path(tok_dir, name).is_file()],
        outputs=[args.out],
        counts={"parameters": sum(p.numel() for p in model.parameters()), "shards": len(shards)},
        details={
            "dtype": spec["dtype"],
            "merged_from": args.method,
            "folder": args.out,
            "max_shard_size": spec["max_shard_size"],
            "chat_template": tokenizer.chat_template is not None,
            "tokenizer_from": tok_dir,
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"saved {args.out} ({len(shards)} safetensors file(s))", file=sys.stderr)


if __name__ == "__main__":
    main()
