"""GGUF files (llama.cpp, Ollama, LM Studio) from a merged safetensors folder, in Python.

Written with the `gguf` package llama.cpp publishes, no llama.cpp checkout: the weights (Llama
q/k rows permuted as llama.cpp's converter does), the hyperparameters, and the tokenizer as
llama.cpp reads it (vocabulary, merges, token types, BOS/EOS/PAD, add-BOS, the pre-tokenizer by
its llama.cpp name, the chat template). Only what can be written exactly is written: another
architecture, a tokenizer that is not byte-level BPE, or a pre-tokenizer llama.cpp has no name
for is refused with the reason (`GGUFError`), never approximated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scripts.compiler.gguf_rules import TYPES, GGUFError, check_config, llama_cpp_pre

LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP_TENSORS = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def rope_theta(config: dict) -> float:
    rope = config.get("rope_parameters") or {}
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def permute_qk(weights, heads: int):
    """llama.cpp's row order for q/k (its converter's `permute`): each head's halves interleaved."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_name(hf_name: str) -> str | None:
    stem, _, suffix = hf_name.rpartition(".")
    if stem in TOP_TENSORS:
        return f"{TOP_TENSORS[stem]}.{suffix}"
    if stem.startswith("model.layers."):
        layer, _, part = stem[len("model.layers.") :].partition(".")
        if part in LAYER_TENSORS:
            return f"blk.{layer}.{LAYER_TENSORS[part]}.{suffix}"
    return None


def read_weights(folder: Path) -> dict:
    """name -> fp32 numpy array, from the folder's safetensors file(s)."""
    import numpy as np
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFError(f"export.gguf: {folder} holds no safetensors weights")
    out = {}
    for file in files:
        try:
            out.update({k: np.asarray(v, dtype=np.float32) for k, v in load_file(str(file)).items()})
        except TypeError:  # bf16 has no numpy dtype: go through torch
            from safetensors.torch import load_file as load_torch

            out.update({k: v.float().numpy() for k, v in load_torch(str(file)).items()})
    return out


def gguf_tensors(weights: dict, config: dict):
    """(gguf name, fp32 array) in llama.cpp's layout; unknown tensors are an error, not dropped."""
    heads, kv_heads = (
        config["num_attention_heads"],
        config.get("num_key_value_heads") or config["num_attention_heads"],
    )
    tied = config.get("tie_word_embeddings", False)
    for name, array in weights.items():
        if name == "lm_head.weight" and tied:
            continue
        target = gguf_name(name)
        if target is None:
            raise GGUFError(f"export.gguf: tensor {name} has no GGUF name (not a plain Llama?)")
        if name.endswith("q_proj.weight"):
            array = permute_qk(array, heads)
        elif name.endswith("k_proj.weight"):
            array = permute_qk(array, kv_heads)
        yield target, array


def encode_tensor(array, spec_type: str):
    """(data, ggml type) of one tensor in the file type: 1-D tensors (norms) stay F32 as in
    llama.cpp's converter; a row not a multiple of the quant block falls back to F16."""
    import gguf
    import numpy as np

    if array.ndim == 1 or spec_type == "f32":
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if spec_type == "f16":
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16
    qtype = getattr(gguf.GGMLQuantizationType, TYPES[spec_type][0])
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(array, qtype), qtype


def tokenizer_metadata(folder: Path, vocab_size: int) -> dict:
    """llama.cpp's tokenizer keys for the folder's tokenizer (GGUFError when not exact)."""
    from tokenizers import Tokenizer

    tokenizer_json = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    pre = llama_cpp_pre(tokenizer_json)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    vocab = dict(tokenizer_json["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer_json.get("added_tokens", [])}
    vocab.update({text: t["id"] for text, t in added.items()})
    if len(vocab) > vocab_size or sorted(vocab.values()) != list(range(len(vocab))):
        raise GGUFError("export.gguf: the token ids are not 0..n-1 within the model's vocabulary size")
    tokens = sorted(vocab, key=vocab.get) + [f"[PAD{i}]" for i in range(len(vocab), vocab_size)]
    # llama.cpp token types: 1 normal, 3 control (special), 4 user-defined, 5 unused (padding)
    types = [(3 if added[t].get("special") else 4) if t in added else 1 for t in tokens[: len(vocab)]] + [
        5
    ] * (vocab_size - len(vocab))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]

    def special_id(key):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        return vocab.get(value) if value is not None else None

    ids = {key: special_id(f"{key}_token") for key in ("bos", "eos", "pad", "unk")}
    probe = Tokenizer.from_str(json.dumps(tokenizer_json)).encode("a").ids
    template = _chat_template(folder, config)
    return {
        "pre": pre,
        "tokens": tokens,
        "token_types": types,
        "merges": merges,
        "ids": ids,
        "add_bos": bool(probe) and probe[0] == ids["bos"],
        "add_eos": bool(probe) and probe[-1] == ids["eos"] and len(probe) > 1,
        "chat_template": template,
    }


def _chat_template(folder: Path, config: dict) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def _add_header(writer, config: dict, meta: dict, spec_type: str, name: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(getattr(gguf.LlamaFileType, TYPES[spec_type][1]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["token_types"])
    writer.add_token_merges(meta["merges"])
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
        ("unk", writer.add_unk_token_id),
    ):
        if meta["ids"][key] is not None:
            add(meta["ids"][key])
    writer.add_add_bos_token(meta["add_bos"])
    writer.add_add_eos_token(meta["add_eos"])
    if meta["chat_template"]:
        writer.add_chat_template(meta["chat_template"])


def metadata_bytes(meta: dict) -> int:
    """About what the header and the tokenizer take in a GGUF file (strings, lengths, types)."""
    strings = meta["tokens"] + meta["merges"] + [meta["chat_template"] or ""]
    return sum(len(text.encode()) + 12 for text in strings) + (1 << 16)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def write_file(writer, out: Path, needed: int, free_bytes: int | None = None) -> None:
    """Write the GGUF file, checking first that about `needed` bytes are free on its disk
    (`free_bytes`: the free space to assume, else the disk's); a write that fails anyway (the
    disk filled meanwhile) removes the partial file. Either way one GGUFError naming the file
    and the space."""
    free = shutil.disk_usage(out.parent).free if free_bytes is None else free_bytes
    if free < needed:
        writer.close()
        out.unlink(missing_ok=True)
        raise GGUFError(
            f"{out}: not enough disk space to write it: it needs about {_megabytes(needed)}, "
            f"{_megabytes(free)} are free on that disk; free some space and run the step again"
        )
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except OSError as exc:  # numpy's tofile says "N requested and M written", without errno
        reason = exc.strerror or str(exc)
        try:
            writer.close()
        except OSError:
            pass
        if out.is_file():
            out.unlink()
        raise GGUFError(
            f"{out}: writing it failed ({reason}), the partial file was removed: it needs about "
            f"{_megabytes(needed)}; is the disk full? free some space and run the step again"
        ) from None


def write_gguf(folder: Path, out: Path, spec_type: str, name: str, free_bytes: int | None = None) -> dict:
    """Write `out` from the merged folder in `spec_type`; returns {ggml type: tensor count}.
    `free_bytes`: the free disk space to assume (tests), else the disk's (write_file)."""
    import gguf

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = check_config(config)
    meta = tokenizer_metadata(folder, config["vocab_size"])
    writer = gguf.GGUFWriter(str(out), arch)
    _add_header(writer, config, meta, spec_type, name)
    counts: dict[str, int] = {}
    needed = metadata_bytes(meta)
    for target, array in gguf_tensors(read_weights(folder), config):
        data, qtype = encode_tensor(array, spec_type)
        writer.add_tensor(target, data, raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        needed += data.nbytes + 64  # its info and alignment
    write_file(writer, out, needed, free_bytes)
    return counts
