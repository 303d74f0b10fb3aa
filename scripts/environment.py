"""Record the software and device of this machine -> results/environment.json.

Every later manifest copies its package versions and device into its provenance.

    python -m scripts.environment --out results/environment.json
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from scripts.common.files import atomic_write_json
from scripts.compiler.spec import schema_errors

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "tokenizers",
    "safetensors",
    "snakemake",
    "numpy",
    "pyarrow",
    "rouge-score",
    "sacrebleu",
)


def package_versions(names=PACKAGES) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe_device() -> dict:
    """CPU or CUDA, GPU names, memory and bf16 support (imports torch, nothing else heavy)."""
    import os

    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 2),
                    "bf16": bool(torch.cuda.is_bf16_supported()),
                }
            )
    return {
        "type": "cuda" if gpus else "cpu",
        "cuda_version": torch.version.cuda,
        "gpus": gpus,
        "cpu_count": os.cpu_count() or 1,
        "torch_threads": torch.get_num_threads(),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    record = {
        "schema_version": 1,
        "step": "environment",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": describe_device(),
    }
    errors = schema_errors(record, "manifests/environment.schema.json")
    if errors:
        raise SystemExit(f"environment record does not match its schema: {errors}")
    atomic_write_json(args.out, record)
    print(f"device: {record['device']['type']}; torch {record['packages']['torch']}", file=sys.stderr)


if __name__ == "__main__":
    main()
