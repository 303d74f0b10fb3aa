"""Batched greedy generation and validation loss, shared by evaluation and benchmarks."""

from __future__ import annotations

import math


def left_padded(batch_ids: list[list[int]], pad_id: int):
    """input_ids and attention_mask tensors with the prompts padded on the left."""
    import torch

    width = max(map(len, batch_ids))
    ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, seq in enumerate(batch_ids):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def generate(
    model, tokenizer, prompts_ids: list[list[int]], *, batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy continuations (decoded, special tokens dropped, stripped), stopping at EOS."""
    import torch

    model.eval()
    outputs = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(prompts_ids), batch_size):
            ids, mask = left_padded(prompts_ids[start : start + batch_size], tokenizer.pad_token_id)
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = generated[:, ids.shape[1] :]
            outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs


def mean_label_loss(
    model, examples: list[tuple[list[int], list[int]]], *, batch_size: int, pad_id: int
) -> float:
    """Token-weighted mean cross-entropy over label tokens (-100 ignored) of all examples."""
    import torch

    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (seq, lab) in enumerate(chunk):
                ids[row, : len(seq)], labels[row, : len(lab)], mask[row, : len(seq)] = (
                    torch.tensor(seq),
                    torch.tensor(lab),
                    1,
                )
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            count += int((shift_labels != -100).sum())
    return total / count if count else math.nan
