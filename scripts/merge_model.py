"""Merge the trained adapter into the base (or take the full fine-tune) and save safetensors.

Writes a folder that plain transformers loads: weights in the export dtype (sharded above
export.max_shard_size, with an index), config, a generation_config that decodes as evaluation
did (greedy unless evaluate.do_sample, evaluate.max_new_tokens, eos/pad ids: `pipeline()` then
answers as the report says), and the tokenizer used in training with its chat template (train
saves the template the tokens were rendered with) and special tokens, checked after saving.
LoRA and QLoRA adapters alike are merged onto the base reloaded in fp32, never onto 4-bit
weights; the result is then cast to the export dtype.

    python -m scripts.merge_model --spec-json '{"dtype": "fp32", "max_shard_size": "5GB",
            "generation": {"max_new_tokens": 16, "do_sample": false}}' \
        --method lora --base results/models/KEY/model --tuned results/runs/demo/train/model \
        --out results/runs/demo/merged --manifest results/runs/demo/merged.manifest.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.manifest import write_manifest
from scripts.common.modeling import export_generation
from scripts.compiler.spec import SpecError, check_slice
from scripts.compiler.steps import export_decoding

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "chat_template.jinja")


def merge_spec(given: dict) -> dict:
    """The merge's slice (steps.step_slices): dtype and max_shard_size from the export section,
    `generation` (the evaluated decoding) from the evaluate section, validated, defaults filled."""
    given = dict(given)
    evaluate = check_slice("evaluate", given.pop("generation", {}))
    export = check_slice("export", {"smoke_prompts": [{"prompt": "(not used by the merge)"}], **given})
    return {key: export[key] for key in ("dtype", "max_shard_size")} | {
        "generation": export_decoding(evaluate)
    }


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


def tokenizer_differences(trained, saved) -> list[str]:
    """What changed between the training tokenizer and the saved one (should be nothing)."""
    checks = {
        "chat_template": lambda t: t.chat_template,
        "special tokens": lambda t: {k: str(v) for k, v in t.special_tokens_map.items()},
        "special token ids": lambda t: (t.bos_token_id, t.eos_token_id, t.pad_token_id),
        "vocabulary size": len,
    }
    return [name for name, get in checks.items() if get(trained) != get(saved)]


def save_merged(model, tokenizer, out: str, max_shard_size: str, decoding: dict) -> dict:
    """Save weights, config, generation_config (the evaluated decoding) and tokenizer; returns
    the generation_config fields that were set."""
    fields = export_generation(
        model.generation_config.to_dict(),
        decoding,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    for key, value in fields.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    return fields


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec-json",
        required=True,
        help='{"dtype": ..., "max_shard_size": ..., "generation": {...}}: the step table\'s merge_model slice',
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
        spec = merge_spec(json_arg(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    if args.method != "full" and not (Path(args.tuned) / "adapter_config.json").is_file():
        fail(f"{args.tuned} holds no adapter_config.json, but train.method is {args.method!r}: retrain")
    from scripts.common.modeling import load_tokenizer, training_tokenizer_dir

    tok_dir = training_tokenizer_dir(args.base, args.tuned)
    tokenizer = load_tokenizer(tok_dir)
    model = merged_model(args.base, args.tuned, args.method, spec["dtype"])
    generation = save_merged(model, tokenizer, args.out, spec["max_shard_size"], spec["generation"])
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
            "generation": {k: v for k, v in generation.items() if v is not None},
            "tokenizer_from": tok_dir,
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"saved {args.out} ({len(shards)} safetensors file(s))", file=sys.stderr)


if __name__ == "__main__":
    main()
