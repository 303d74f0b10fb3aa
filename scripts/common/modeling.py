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


def load_tuned_model(base_dir: str | Path, tuned_dir: str | Path, method: str, dtype: str = "fp32"):
    """The trained model: a full fine-tune folder, or the base with its LoRA adapter."""
    from transformers import AutoModelForCausalLM

    if method == "full":
        return AutoModelForCausalLM.from_pretrained(
            str(tuned_dir), use_safetensors=True, dtype=torch_dtype(dtype)
        )
    from peft import PeftModel

    return PeftModel.from_pretrained(load_base_model(base_dir, dtype), str(tuned_dir))
