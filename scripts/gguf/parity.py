"""Does a GGUF file behave like the merged safetensors model it was written from?

Each GGUF is loaded back as a user with only that file would load it: transformers'
`from_pretrained(folder, gguf_file=...)`, the tokenizer rebuilt from the file's metadata (a
folder holding the .gguf alone, so no tokenizer.json can stand in). Compared with the merged
model on the validation records: the prompt's token ids against the ids training used, the
logits over every training token, the greedy next token at every position, and greedy
generations for the smoke prompts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

F32_LOGIT_TOLERANCE = 1e-4


def load_gguf(path: Path):
    """(model, tokenizer) from one .gguf file, nothing else beside it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as alone:
        os.symlink(path.resolve(), Path(alone) / path.name)
        model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=path.name)
    return model.eval(), tokenizer


def load_reference(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def validation_rows(token_files: list[str]) -> list[dict]:
    from scripts.common.token_splits import load_split

    columns = ["id", "input_ids", "prompt_length", "prompt"]
    return load_split(token_files, "validation", columns).to_pylist()


def token_mismatches(tokenizer, rows: list[dict], chat: bool) -> list[str]:
    """Ids of the records whose prompt the GGUF tokenizer encodes unlike training did (the
    prompt is what a user sends; chat prompts are rendered text that carries its own BOS)."""
    bad = []
    for row in rows:
        if not row["prompt"]:
            continue
        ids = tokenizer(row["prompt"], add_special_tokens=not chat)["input_ids"]
        if ids != list(row["input_ids"][: row["prompt_length"]]):
            bad.append(row["id"])
    return bad


def logit_comparison(reference, candidate, rows: list[dict]) -> dict:
    """Max |logit difference| over every token of every record; greedy next-token agreement at
    the positions that predict the answer (from the prompt's last token on: what generation
    decides) and at every position (the prompt's own tokens included, often near-ties)."""
    import torch

    worst, agree, total, agree_all, total_all = 0.0, 0, 0, 0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([list(row["input_ids"])])
            want, got = reference(ids).logits[0], candidate(ids).logits[0]
            # a NaN (a corrupted weight) counts as an infinite difference, not as none
            worst = max(worst, torch.nan_to_num((want - got).abs(), nan=float("inf")).max().item())
            same = want.argmax(-1) == got.argmax(-1)
            answer = same[max(row["prompt_length"] - 1, 0) : -1]
            agree, total = agree + int(answer.sum()), total + answer.numel()
            agree_all, total_all = agree_all + int(same.sum()), total_all + same.numel()
    return {
        "max_logit_diff": worst,
        "next_token_agreement": agree / total if total else 1.0,
        "positions": total,
        "all_positions_agreement": agree_all / total_all if total_all else 1.0,
    }


def greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def compare(reference, ref_tokenizer, path: Path, rows, prompts, chat: bool, max_new_tokens: int) -> dict:
    """The parity figures of one GGUF file (loading errors propagate: a broken file fails)."""
    model, tokenizer = load_gguf(path)
    figures = logit_comparison(reference, model, rows)
    mismatched = token_mismatches(tokenizer, rows, chat)
    generations = [
        {
            "prompt": p,
            "gguf": greedy(model, tokenizer, p, max_new_tokens),
            "safetensors": greedy(reference, ref_tokenizer, p, max_new_tokens),
        }
        for p in prompts
    ]
    return {
        "records": len(rows),
        "token_mismatches": mismatched[:20],
        "tokens_equal": not mismatched,
        **figures,
        "generations": generations,
        "generations_equal": all(g["gguf"] == g["safetensors"] for g in generations),
    }


def failures(spec_type: str, result: dict) -> list[str]:
    """Why a GGUF fails parity: any tokenization difference; for f32 also logits beyond the
    tolerance or a different greedy generation (quantized types' figures are reported)."""
    out = []
    if not result["tokens_equal"]:
        out.append(
            f"{spec_type}: prompts tokenize differently (records {', '.join(result['token_mismatches'])})"
        )
    if spec_type == "f32" and result["max_logit_diff"] > F32_LOGIT_TOLERANCE:
        out.append(f"f32: logits differ by {result['max_logit_diff']:.3g} > {F32_LOGIT_TOLERANCE}")
    if spec_type == "f32" and not result["generations_equal"]:
        out.append("f32: greedy generations differ from the safetensors model's")
    return out
