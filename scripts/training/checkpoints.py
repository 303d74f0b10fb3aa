"""Training checkpoints in the work folder: find the newest complete one, trim the log to it.

Transformers writes `checkpoint-<step>/` in place, the trainer state last; a job killed while
writing leaves a folder without its trainer state, weights or RNG state, which must be
skipped, not resumed from. Transformers itself keeps at most `save_total_limit` of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


def is_complete(folder: Path) -> bool:
    """A checkpoint is usable when its trainer state parses and its weights and optimizer exist."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    has_weights = any((folder / name).is_file() for name in WEIGHTS)
    # the RNG state makes a resumed run bitwise equal to an uninterrupted one (one file per rank)
    has_rng = any(folder.glob("rng_state*.pth"))
    return (
        has_weights
        and has_rng
        and (folder / "optimizer.pt").is_file()
        and (folder / "scheduler.pt").is_file()
    )


def newest_complete(work_dir: str | Path) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint or None, incomplete checkpoints found)."""
    found = []
    for child in Path(work_dir).glob("checkpoint-*"):
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    incomplete = []
    for _, folder in sorted(found, reverse=True):
        if is_complete(folder):
            return folder, incomplete
        incomplete.append(folder)
    return None, incomplete


INPUTS_FILE = "inputs.sha256"


def inputs_fingerprint(token_files, base_dir: str | Path) -> str:
    """sha256 of what the checkpoints were trained from: the token shards' bytes and the base
    model's files (their sha256 from the base model's manifest when it has one). The work folder
    is keyed by the spec only, so an edited record or a retrained tokenizer keeps the key:
    checkpoints from other inputs must not be resumed or reloaded."""
    import hashlib

    from scripts.common.files import sha256_file

    digest = hashlib.sha256()
    for path in sorted(map(str, token_files)):
        digest.update(f"{Path(path).name} {sha256_file(path)}\n".encode())
    base = Path(base_dir)
    manifest = base.with_name(base.name + ".manifest.json")
    if manifest.is_file():
        for item in json.loads(manifest.read_text())["outputs"]:
            digest.update(f"{Path(item['path']).name} {item['sha256']}\n".encode())
    else:
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(base)} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def trained_from(work_dir: str | Path) -> str | None:
    """The inputs fingerprint the work folder's checkpoints were trained from, if recorded."""
    path = Path(work_dir) / INPUTS_FILE
    return path.read_text().strip() if path.is_file() else None


def is_final(folder: Path | None) -> bool:
    """True when the checkpoint is the run's last step: resuming from it must not step again
    (the trainer's loop checks max_steps only after a step, so it would train one more)."""
    if folder is None:
        return False
    state = json.loads((folder / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def step_of(checkpoint: Path | None) -> int:
    return int(_CHECKPOINT.match(checkpoint.name).group(1)) if checkpoint else 0


def trim_log(lines: list[dict], step: int, final: bool = False) -> list[dict]:
    """Log entries up to the resumed step: the rerun writes the later ones (and its summary)
    again; from the final checkpoint nothing is rerun, so the summary stays."""
    return [line for line in lines if line.get("step", 0) <= step and (final or "train_loss" not in line)]
