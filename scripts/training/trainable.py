"""The model a run trains: the base (full), the base with LoRA adapters, or the 4-bit base with
adapters (QLoRA); and the precision `auto` resolves to. Shared by the train step and the
reference log-prob step (which loads the reference exactly as training sees it)."""

from __future__ import annotations

import sys


def resolve_precision(name: str) -> str:
    """auto: bf16 on a GPU that supports it, fp32 otherwise (bf16 on CPU is slower, and TRL raises)."""
    import torch

    if name != "auto":
        return name
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def with_adapter(model, train: dict):
    from peft import get_peft_model

    return get_peft_model(model, lora_config(train))


def lora_config(train: dict):
    from peft import LoraConfig

    lora = train["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        modules_to_save=lora["modules_to_save"],
        task_type="CAUSAL_LM",
    )


def load_trainable_model(base: str, train: dict, precision: str, adapter: bool = True):
    """The model to train: the base (full), the base with adapters (lora), or 4-bit base + adapters.
    With adapter=False the adapters are left to the trainer (DPO: TRL disables them for the
    reference)."""
    from scripts.common.modeling import guard_4bit_for_training, load_base_model, load_base_model_4bit

    if train["method"] == "full":
        return load_base_model(base, "fp32")
    if train["method"] == "lora":
        model = load_base_model(base, "fp32")
        return with_adapter(model, train) if adapter else model
    from peft import prepare_model_for_kbit_training

    qlora = train["qlora"]
    compute = qlora["compute_dtype"]
    compute = ("bf16" if precision == "bf16" else "fp32") if compute == "auto" else compute
    model = load_base_model_4bit(base, qlora, compute)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train["gradient_checkpointing"])
    # (the 4-bit layers are the same objects once LoRA wraps them, here or in TRL's DPOTrainer)
    print(f"qlora: guarded {guard_4bit_for_training(model)} 4-bit layers for training", file=sys.stderr)
    return with_adapter(model, train) if adapter else model
