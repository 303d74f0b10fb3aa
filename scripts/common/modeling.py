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


def training_tokenizer_dir(base: str, tuned: str) -> str:
    """Where the training tokenizer lives: the trained folder (train saves it there), else the base."""
    return tuned if (Path(tuned) / "tokenizer_config.json").is_file() else base


def load_tokenizer(model_dir: str | Path, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = padding_side
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
