"""Spec-time checks of export.gguf (stdlib only: the Snakefile runs them at DAG-build time).

What can be known before any job runs is checked here: the export holds a merged model, and a
local base model's architecture and tokenizer can be written to GGUF exactly. A built model
(model.build) is a Llama with a SmolLM-style tokenizer: supported. A hub model or a run's tuned
model is checked by the export_gguf step itself, with the same messages.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.common.gguf_export import GGUFError, check_config, llama_cpp_pre


def local_model_errors(folder: Path) -> list[str]:
    """Why a local model folder cannot be written to GGUF exactly (empty: it can)."""
    try:
        check_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        if (folder / "tokenizer.json").is_file():
            llama_cpp_pre(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
        else:
            raise GGUFError(
                "export.gguf: the model has no tokenizer.json (a sentencepiece tokenizer?); "
                "GGUF export writes byte-level BPE tokenizers only"
            )
    except GGUFError as exc:
        return [str(exc)]
    except (OSError, ValueError, KeyError):
        return []  # an unreadable folder is model.path's own error, reported by its check
    return []


def gguf_errors(sections: dict, workdir: Path = Path(".")) -> list[tuple[list, str]]:
    export = sections["export"]
    if "gguf" not in export:
        return []
    if export["format"] == "adapter":
        return [
            (
                ["export", "gguf"],
                "export.gguf: GGUF files are written from the merged model; "
                "use export.format: merged or both",
            )
        ]
    path = sections["model"].get("path")
    if path is None:
        return []
    return [(["export", "gguf"], message) for message in local_model_errors(workdir / path)]
