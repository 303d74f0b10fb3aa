"""QLoRA against bf16 LoRA on a CUDA GPU: peak GPU memory and training tokens/s.

A ~1B-parameter Llama is built from a config (random weights, no hub access), saved once,
then trained with LoRA (r 16, all linear layers) twice in this process: on the bf16 base,
and on the same base quantized to 4 bits (nf4, double quantization, bf16 compute) the way
tunemake's qlora method loads it. Plain torch + transformers + peft + bitsandbytes (no TRL).
Prints one line per measure and exits cleanly with a message where no CUDA GPU is present.

    python bench/gpu_qlora.py [--steps 20] [--warmup 3] [--batch 8] [--seq 512] [--no-gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time


def build_base(folder: str, layers: int) -> int:
    """Save a randomly initialised ~1B Llama (Llama-3.2-1B-like shape, 32k vocabulary)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return params


def load(folder: str, quantized: bool, checkpointing: bool):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.bfloat16, "device_map": {"": 0}}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def measure(folder: str, quantized: bool, args) -> tuple[float, float, float]:
    """(GiB held by the loaded model, peak GPU GiB over loading and training, tokens/s)."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = load(folder, quantized, args.gradient_checkpointing)
    weights = torch.cuda.memory_allocated() / 2**30
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator(device="cuda").manual_seed(0)
    batch = torch.randint(0, 32000, (args.batch, args.seq), device="cuda", generator=generator)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer, loss
    return weights, peak, args.steps * args.batch * args.seq / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--layers", type=int, default=16, help="16 gives ~1.0B parameters")
    parser.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
        help="keep activations (then they, not the weights, dominate the peak)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_qlora: skipped (torch is not installed)")
        return
    if not torch.cuda.is_available():
        print("gpu_qlora: skipped (no CUDA GPU on this machine)")
        return
    try:
        import bitsandbytes  # noqa: F401
        import peft  # noqa: F401
    except ImportError as exc:
        print(f"gpu_qlora: skipped ({exc.name} is not installed)")
        return
    with tempfile.TemporaryDirectory() as folder:
        params = build_base(folder, args.layers)
        print(f"gpu_qlora_model: {params / 1e9:.2f}B parameters on {torch.cuda.get_device_name(0)}")
        lora_weights, lora_peak, lora_rate = measure(folder, False, args)
        qlora_weights, qlora_peak, qlora_rate = measure(folder, True, args)
    print(
        f"gpu_qlora_setup: batch {args.batch} x {args.seq} tokens, gradient checkpointing {args.gradient_checkpointing}"
    )
    print(f"lora_bf16_model_gib: {lora_weights:.2f}")
    print(f"qlora_model_gib: {qlora_weights:.2f}")
    print(f"lora_bf16_peak_gib: {lora_peak:.2f}")
    print(f"qlora_peak_gib: {qlora_peak:.2f}")
    print(f"lora_bf16_tokens_per_s: {lora_rate:.0f}")
    print(f"qlora_tokens_per_s: {qlora_rate:.0f}")
    print(f"qlora_vs_lora_memory: {qlora_peak / lora_peak:.2f}")
    print(f"qlora_vs_lora_speed: {qlora_rate / lora_rate:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
