"""The tunemake side of the training benches: scripts.train_model run in this process, as the
train_model rule runs it, returning its manifest (timings and counts)."""

from __future__ import annotations

import json
from pathlib import Path


def train_step(train: dict, base: Path, tokens: list[Path], out: Path, *extra: str) -> dict:
    """The manifest of scripts.train_model trained on `tokens` from `base` into `out`; `extra`:
    more arguments (`--reference FILE` for DPO)."""
    from scripts.train_model import main

    main(
        [
            "--spec-json", json.dumps(train), "--base", str(base), "--tokens", *map(str, tokens),
            "--work-dir", str(out / "work"), "--out", str(out / "model"), "--log", str(out / "log.jsonl"),
            "--manifest", str(out / "manifest.json"), *extra,
        ]
    )  # fmt: skip
    return json.loads((out / "manifest.json").read_text())
