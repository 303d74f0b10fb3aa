"""Loading base models, tokenizers and tuned models the same way in every step (heavy imports).

A base model folder (`results/models/<key>/model`) always holds the checked tokenizer and a
`tunemake_base.json` that says where the weights are: in the folder itself (built models) or
at a hub id or local path (loaded with from_pretrained, safetensors only).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

BASE_REF = "tunemake_base.json"


def pin_threads(threads: int, seed: int | None = None) -> None:
    """Fix the thread count (results depend on it) and seed every generator."""
    import numpy as np
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def base_ref(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / BASE_REF).read_text())


# generation_config fields that only sampling reads: a greedy config that sets one is invalid
# (GenerationConfig.save_pretrained raises) and `generate()` ignores it when greedy anyway
SAMPLING_ONLY = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "top_h",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
)


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


def export_generation(
    current: dict, decoding: dict, bos: int | None, eos: int | None, pad: int | None
) -> dict:
    """The generation_config fields an export sets over the base's `current` ones, so that a
    plain `pipeline("text-generation", model=export)` decodes as evaluation did: evaluation ran
    `generate()` on the base's generation_config with do_sample, max_new_tokens (and, when
    sampling, temperature, top_p, top_k) from the evaluate section (`decoding`, from
    steps.export_decoding), and stopped at the tokenizer's EOS. Greedy clears the sampling-only
    fields (a hub base's temperature, top_k...), which greedy evaluation ignored too; the other
    fields of the base (repetition_penalty...) are kept, as evaluation used them."""
    sampling = bool(decoding["do_sample"])
    fields = {"do_sample": sampling, "max_new_tokens": decoding["max_new_tokens"]}
    fields |= {key: None for key in SAMPLING_ONLY} if not sampling else {}
    fields |= {key: decoding[key] for key in ("temperature", "top_p", "top_k") if sampling}
    return fields | generation_ids(current, bos, eos, pad)


def base_generation_config(model_dir: str | Path) -> dict:
    """The base's generation_config.json as a dict, without loading the model: the base folder's
    own (built models), the local model folder's, or the hub copy in the local cache; {} if none."""
    ref = base_ref(model_dir)
    weights = ref["weights"]
    folder = Path(model_dir) if weights == "." else Path(weights)
    if (folder / "generation_config.json").is_file():
        return json.loads((folder / "generation_config.json").read_text())
    if weights == "." or folder.is_dir():
        return {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(weights, "generation_config.json", revision=ref.get("revision"))
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else {}


def training_tokenizer_dir(base: str, tuned: str) -> str:
    """Where the training tokenizer lives: the trained folder (train saves it there), else the base."""
    return tuned if (Path(tuned) / "tokenizer_config.json").is_file() else base


def load_tokenizer(model_dir: str | Path, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = padding_side
    # transformers records how the files were found (local_files_only follows HF_HUB_OFFLINE) and
    # save_pretrained writes it into tokenizer_config.json: a build online and its verify offline
    # would differ by that byte. It says nothing about the tokenizer: not saved.
    tokenizer.init_kwargs.pop("local_files_only", None)
    return tokenizer


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def load_base_model(model_dir: str | Path, dtype: str = "fp32"):
    """The base model's weights, from the folder or from its recorded hub id / path."""
    from transformers import AutoModelForCausalLM

    ref = base_ref(model_dir)
    weights = ref["weights"]
    source = str(model_dir) if weights == "." else weights
    return AutoModelForCausalLM.from_pretrained(
        source,
        revision=ref.get("revision"),
        trust_remote_code=ref.get("trust_remote_code", False),
        use_safetensors=True,
        dtype=torch_dtype(dtype),
    )


def load_base_model_4bit(model_dir: str | Path, qlora: dict, compute_dtype: str):
    """The base with every linear layer quantized to 4 bits by bitsandbytes (QLoRA training)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    ref = base_ref(model_dir)
    weights = ref["weights"]
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=qlora["quant_type"],
        bnb_4bit_use_double_quant=qlora["double_quant"],
        bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
    )
    return AutoModelForCausalLM.from_pretrained(
        str(model_dir) if weights == "." else weights,
        revision=ref.get("revision"),
        trust_remote_code=ref.get("trust_remote_code", False),
        use_safetensors=True,
        quantization_config=quantization,
        dtype=torch_dtype(compute_dtype),
        device_map={"": torch.cuda.current_device()} if torch.cuda.is_available() else None,
    )


def guard_4bit_for_training(model) -> int:
    """Keep gradients flowing through 4-bit layers after no-grad passes; returns the layers fixed.

    On CPUs with AVX512-BF16, bitsandbytes repacks a Linear4bit's weights for fast inference on
    its first no-grad forward (evaluation, generation), and no gradient flows through that
    layer afterwards: QLoRA then silently stops learning. Turning the fast path off avoids it.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_tuned_model(base_dir: str | Path, tuned_dir: str | Path, method: str, dtype: str = "fp32"):
    """The trained model: a full fine-tune folder, or the base with its LoRA adapter.

    A QLoRA adapter is a normal PEFT adapter: it goes onto the base in full or half precision
    (not re-quantized), as for merging and export.
    """
    from transformers import AutoModelForCausalLM

    if method == "full":
        return AutoModelForCausalLM.from_pretrained(
            str(tuned_dir), use_safetensors=True, dtype=torch_dtype(dtype)
        )
    from peft import PeftModel

    return PeftModel.from_pretrained(load_base_model(base_dir, dtype), str(tuned_dir))
