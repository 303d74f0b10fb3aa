"""Merge the trained adapter into the base (or take the full fine-tune) and save safetensors.

Writes a folder that plain transformers loads: weights in the export dtype, config,
generation_config with eos/pad ids, and the tokenizer used in training.

    python -m scripts.merge_model --dtype fp32 --method lora --base results/models/KEY/model \
        --tuned results/runs/demo/train/model --out results/runs/demo/merged \
        --manifest results/runs/demo/merged.manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scripts.common.manifest import write_manifest


def merged_model(base: str, tuned: str, method: str, dtype: str):
    """The tuned model as one plain transformers model, in `dtype` (merge done in fp32)."""
    from scripts.common.modeling import load_tuned_model, torch_dtype

    model = load_tuned_model(base, tuned, method, "fp32")
    if method == "lora":
        model = model.merge_and_unload()
    return model.to(torch_dtype(dtype))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help='{"dtype": ...} from the export section')
    parser.add_argument("--method", required=True, choices=["full", "lora"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--tuned", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    spec = json.loads(args.spec_json)
    from transformers import GenerationConfig

    from scripts.common.modeling import load_tokenizer

    tokenizer = load_tokenizer(args.tuned)
    model = merged_model(args.base, args.tuned, args.method, spec["dtype"])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    write_manifest(
        args.manifest,
        "merge_model",
        spec,
        inputs=[f"{args.tuned}/tokenizer.json"],
        outputs=[args.out],
        counts={"parameters": sum(p.numel() for p in model.parameters())},
        details={"dtype": spec["dtype"], "merged_from": args.method, "folder": args.out},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"saved {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
