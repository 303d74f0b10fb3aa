"""Spec-time checks of export.gguf (stdlib only: the Snakefile runs them at DAG-build time), and
the GGUF types and architectures table the writer (scripts/gguf/writer.py) reads.

What can be known before any job runs is checked here: the export holds a merged model, and a
local base model's architecture and tokenizer can be written to GGUF exactly. A built model
(model.build) is a Llama with a SmolLM-style tokenizer: supported. A hub model or a run's tuned
model is checked by the export_gguf step itself, with the same messages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# transformers architecture -> llama.cpp architecture (the tensor map below is Llama's).
ARCHITECTURES = {"LlamaForCausalLM": "llama"}
# spec type -> (ggml tensor type name, llama.cpp file type name)
TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}

# The GPT-2 split (ByteLevel with use_regex) and llama.cpp's names for the pre-tokenizers that
# are exactly it, with each digit split off first, or a Split regex then ByteLevel without one.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}
# llama.cpp's "smollm" (also starcoder, refact) splits `\p{N}` then the GPT-2 regex: exactly
# tokenizers' Digits(individual_digits=True) + ByteLevel(add_prefix_space=False).
PRE_TOKENIZERS = {"gpt-2": [_BYTE_LEVEL], "smollm": [_DIGITS, _BYTE_LEVEL]}


class GGUFError(ValueError):
    """A model or tokenizer that cannot be written to GGUF exactly; the message says why."""


def _pre_steps(pre: dict | None) -> list[dict]:
    if pre is None:
        return []
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    keep = {"type", "add_prefix_space", "use_regex", "individual_digits"}
    return [{k: v for k, v in step.items() if k in keep} for step in steps]


def llama_cpp_pre(tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, or GGUFError saying what it is."""
    model, decoder = tokenizer_json.get("model") or {}, tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise GGUFError(
            f"export.gguf: the tokenizer is {model.get('type')} with a {decoder.get('type')} decoder; "
            "GGUF export writes byte-level BPE tokenizers only (GPT-2, Llama 3, SmolLM style)"
        )
    if tokenizer_json.get("normalizer") is not None:
        raise GGUFError(
            "export.gguf: the tokenizer has a normalizer, which llama.cpp's BPE tokenizer does not apply"
        )
    steps = _pre_steps(tokenizer_json.get("pre_tokenizer"))
    for name, shape in PRE_TOKENIZERS.items():
        if len(steps) == len(shape) and all(
            all(step.get(k) == v for k, v in want.items()) for want, step in zip(shape, steps)
        ):
            return name
    raise GGUFError(
        f"export.gguf: the tokenizer's pre-tokenizer {json.dumps(steps)} has no llama.cpp name, so a "
        "GGUF file would tokenize differently; supported: "
        + "; ".join(f"{name} = {json.dumps(shape)}" for name, shape in PRE_TOKENIZERS.items())
    )


def check_config(config: dict) -> str:
    """The llama.cpp architecture of a transformers config, or GGUFError with what is supported."""
    archs = config.get("architectures") or [config.get("model_type")]
    if archs[0] not in ARCHITECTURES:
        raise GGUFError(
            f"export.gguf: architecture {archs[0]} cannot be written to GGUF; supported: "
            f"{', '.join(ARCHITECTURES)}"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise GGUFError(
            f"export.gguf: rope scaling {rope.get('rope_type')!r} is not written (plain RoPE only)"
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise GGUFError("export.gguf: attention or MLP biases are not written (Llama without biases only)")
    heads = config["num_attention_heads"]
    if config.get("head_dim") not in (None, config["hidden_size"] // heads):
        raise GGUFError("export.gguf: head_dim differs from hidden_size / num_attention_heads")
    return ARCHITECTURES[archs[0]]


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


def modelfile_quote_error(text: str) -> str | None:
    """Why `text` cannot be a Modelfile value in triple quotes, or None. Ollama's parser has no
    escapes: it ends a triple-quoted value at the first line break whose text before it ends
    with three quotes (trailing blanks ignored); three quotes anywhere else are read back as is."""
    for line in re.split(r"(?<=[\r\n])", text)[:-1]:
        if line.rstrip().endswith('"""'):
            return (
                'holds """ at the end of a line, where Ollama\'s Modelfile parser ends the value '
                "(it has no escape for it)"
            )
    return None


def chat_sources(data: dict) -> list[int]:
    """Indexes of the sources whose records are conversations (the Modelfile renders those)."""
    return [i for i, source in enumerate(data["sources"]) if "messages" in source["fields"]]


def training_system(data: dict) -> str | None:
    """The system message the data steps put first in conversations without one
    (data.sources[i].chat.system), which the Modelfile's SYSTEM carries; gguf_errors refuses
    sources that disagree, so the first chat source's is every chat source's."""
    indexes = chat_sources(data)
    return data["sources"][indexes[0]]["chat"]["system"] if indexes else None


def _shown(text: str | None) -> str:
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= 60 else shown[:56] + '..."'


def _system_errors(data: dict) -> list[tuple[list, str]]:
    indexes = chat_sources(data)
    if not indexes:
        return []
    first = indexes[0]
    system = data["sources"][first]["chat"]["system"]
    for i in indexes[1:]:
        other = data["sources"][i]["chat"]["system"]
        if other != system:
            return [
                (
                    ["data", "sources", i, "chat", "system"],
                    f"data.sources[{i}].chat.system: {_shown(other)} differs from data.sources[{first}]"
                    f".chat.system {_shown(system)}, and the Ollama Modelfile of export.gguf has one "
                    "SYSTEM, used for every conversation that brings none; give every chat source the "
                    "same chat.system (or none), or drop export.gguf",
                )
            ]
    reason = modelfile_quote_error(system) if system else None
    if reason:
        return [
            (
                ["data", "sources", first, "chat", "system"],
                f"data.sources[{first}].chat.system: {reason}, and export.gguf writes it as the "
                "Modelfile's SYSTEM; put another character after those quotes",
            )
        ]
    return []


def gguf_errors(sections: dict, workdir: Path = Path(".")) -> list[tuple[list, str]]:
    export = sections["export"]
    if "gguf" not in export:
        return []
    system_errors = _system_errors(sections["data"])
    if system_errors:
        return system_errors
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
