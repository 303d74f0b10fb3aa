"""Export the trained LoRA/QLoRA adapter in PEFT format, with the tokenizer used in training.

Hard-links the adapter files (adapter_config.json, adapter_model.safetensors) and the
training tokenizer's files (with the chat template training used) into a clean folder, and
writes a generation_config.json that decodes as evaluation did (the base's, with the evaluated
decoding and the tokenizer's eos/pad ids; transformers takes the generation config and the
tokenizer of an adapter folder from its base, so load them from the folder itself). Training
leftovers (training_args.bin, the PEFT card) stay behind. The adapter is kept as trained: its
base_model_name_or_path is the hub id or local path the base was loaded from. No torch import:
this step takes a second.

    python -m scripts.export_adapter --spec-json '{"generation": {"max_new_tokens": 16}}' \
        --method lora --base results/models/KEY/model \
        --tuned results/runs/demo/train/model --out results/runs/demo/adapter \
        --manifest results/runs/demo/adapter.manifest.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_json
from scripts.common.manifest import write_manifest
from scripts.common.modeling import base_generation_config, export_generation, training_tokenizer_dir
from scripts.compiler.spec import SpecError, check_slice
from scripts.compiler.steps import export_decoding

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# what tokenizer.save_pretrained writes, for fast and slow tokenizers of every family
TOKENIZER_PATTERNS = (
    "tokenizer*.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "vocab.*",
    "merges.txt",
    "spiece.model",
    "*.tiktoken",
)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (no copy of large weights; Snakemake never writes into a finished output)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def adapter_files(tuned: Path, tokenizer_dir: Path) -> list[Path]:
    """The files of the adapter export: the PEFT adapter, then the training tokenizer's files."""
    missing = [name for name in ADAPTER_FILES if not (tuned / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{tuned} holds no PEFT adapter (missing {', '.join(missing)}): export.format 'adapter' "
            "and 'both' need train.method lora or qlora; with train.method full use export.format merged"
        )
    tokenizer = sorted({p for pattern in TOKENIZER_PATTERNS for p in tokenizer_dir.glob(pattern)})
    return [tuned / name for name in ADAPTER_FILES] + tokenizer


def adapter_spec(given: dict) -> dict:
    """The step's slice (steps.step_slices): `generation`, the evaluated decoding, defaults filled."""
    return {"generation": export_decoding(check_slice("evaluate", given.get("generation", {})))}


def generation_config(base: str, tokenizer_dir: Path, decoding: dict) -> dict:
    """The base's generation_config with the evaluated decoding and the training tokenizer's ids."""
    from scripts.common.chat import load_tokenizer_files

    current = base_generation_config(base)
    ids = load_tokenizer_files(tokenizer_dir).ids
    fields = export_generation(current, decoding, ids["bos_token"], ids["eos_token"], ids["pad_token"])
    return {k: v for k, v in (current | fields).items() if v is not None}


def has_chat_template(tokenizer_dir: Path) -> bool:
    config = tokenizer_dir / "tokenizer_config.json"
    in_config = config.is_file() and "chat_template" in json.loads(config.read_text())
    return in_config or any(tokenizer_dir.glob("chat_template.*"))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec-json", required=True, help='{"generation": {...}}: the step table\'s export_adapter slice'
    )
    parser.add_argument("--method", required=True, choices=["lora", "qlora"])
    parser.add_argument("--base", required=True, help="base model folder (tokenizer fallback)")
    parser.add_argument("--tuned", required=True, help="the trained adapter folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--run")
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    tuned, out = Path(args.tuned), Path(args.out)
    tok_dir = Path(training_tokenizer_dir(args.base, args.tuned))
    try:
        spec = adapter_spec(json_arg(args.spec_json))
        files = adapter_files(tuned, tok_dir)
    except (SpecError, FileNotFoundError) as exc:
        fail(str(exc))
    for src in files:
        link_or_copy(src, out / src.name)
    atomic_write_json(
        out / "generation_config.json", generation_config(args.base, tok_dir, spec["generation"])
    )
    config = json.loads((tuned / "adapter_config.json").read_text())
    write_manifest(
        args.manifest,
        "export_adapter",
        spec,
        run=args.run,
        inputs=files,
        outputs=[*(out / src.name for src in files), out / "generation_config.json"],
        counts={"files": len(files)},
        details={
            "method": args.method,
            "peft_type": str(config.get("peft_type")),
            "base_model_name_or_path": config.get("base_model_name_or_path"),
            "chat_template": has_chat_template(tok_dir),
            "folder": str(out),
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"adapter exported to {out} ({len(files)} files)", file=sys.stderr)


if __name__ == "__main__":
    main()
