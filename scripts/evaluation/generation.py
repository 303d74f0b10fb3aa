"""Batched generation and validation loss, shared by evaluation and benchmarks (torch imported lazily).

Prompts are token ids (the tokenized data's `input_ids[:prompt_length]`), so chat data is
generated from exactly the rendered prompt the model was trained on. Batches are formed from
prompts of similar length (less padding), padded on the left, and results come back in the
caller's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decoding:
    """How to generate: greedy unless do_sample; stop at EOS unless stop_at_eos is false."""

    max_new_tokens: int = 32
    batch_size: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop_at_eos: bool = True

    @classmethod
    def from_spec(cls, ev: dict) -> Decoding:
        return cls(**{name: ev[name] for name in cls.__dataclass_fields__})


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id, or its EOS id for tokenizers without one (many hub models)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set one in the base model")
    return pad


def eos_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus the model's generation_config EOS ids (chat models end turns there)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (memory errors show early)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def left_padded(batch_ids: list[list[int]], pad_id: int):
    """input_ids and attention_mask tensors with the prompts padded on the left."""
    import torch

    width = max(map(len, batch_ids))
    ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, seq in enumerate(batch_ids):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def cut_at_eos(tokens: list[int], eos: list[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos:
            return tokens[:position]
    return tokens


def generate_ids(
    model, tokenizer, prompts_ids: list[list[int]], decoding: Decoding, on_batch=None
) -> list[list[int]]:
    """New token ids per prompt (cut at the first EOS when stop_at_eos), in the prompts' order;
    on_batch(prompts done so far) after each batch (progress lines)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    pad, eos = pad_id_of(tokenizer), eos_ids(model, tokenizer)
    sampling = (
        {"temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": decoding.top_k}
        if decoding.do_sample
        else {}
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(decoding.seed)
    outputs: list[list[int]] = [[] for _ in prompts_ids]
    done = 0
    try:
        with torch.inference_mode():
            for batch in length_batches(list(map(len, prompts_ids)), decoding.batch_size):
                ids, mask = left_padded([prompts_ids[i] for i in batch], pad)
                generated = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=decoding.max_new_tokens,
                    do_sample=decoding.do_sample,
                    **sampling,
                    eos_token_id=eos if decoding.stop_at_eos else None,
                    pad_token_id=pad,
                )
                for i, row in zip(batch, generated[:, ids.shape[1] :].tolist()):
                    outputs[i] = cut_at_eos(row, eos) if decoding.stop_at_eos else row
                done += len(batch)
                if on_batch is not None:
                    on_batch(done)
    finally:
        torch.random.set_rng_state(generator_state)
    return outputs


def generate(model, tokenizer, prompts_ids: list[list[int]], decoding: Decoding, on_batch=None) -> list[str]:
    """Decoded continuations (special tokens dropped, surrounding whitespace stripped)."""
    new_ids = generate_ids(model, tokenizer, prompts_ids, decoding, on_batch)
    return [text.strip() for text in tokenizer.batch_decode(new_ids, skip_special_tokens=True)]


def label_losses(
    model, examples: list[tuple[list[int], list[int]]], *, batch_size: int, pad_id: int
) -> list[tuple[float, int]]:
    """Per example: (summed cross-entropy in nats, label token count) over labels != -100."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    results: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    with torch.inference_mode():
        for batch in length_batches([len(ids) for ids, _ in examples], batch_size):
            width = max(len(examples[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq, lab = examples[i]
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                labels[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            shift_labels = labels[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), shift_labels, ignore_index=-100, reduction="none"
            )
            sums, counts = loss.sum(dim=1).tolist(), (shift_labels != -100).sum(dim=1).tolist()
            for row, i in enumerate(batch):
                results[i] = (float(sums[row]), int(counts[row]))
    return results


def mean_loss(losses: list[tuple[float, int]]) -> float:
    """Token-weighted mean cross-entropy of `label_losses` results (NaN with no label tokens)."""
    total, count = sum(s for s, _ in losses), sum(c for _, c in losses)
    return total / count if count else math.nan
