"""Trainer callbacks of the train step: the JSONL training log, early stopping, and a stop at
the first non-finite gradient (so NaN weights are never written as a result).

Both are written so that a resumed run behaves like an uninterrupted one: the log continues
the kept entries (elapsed time included), and early stopping decides from the trainer's own
log history, which checkpoints restore, rather than from state of its own.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from scripts.compiler.objectives import logged_keys

# The keys every trainer logs, then each objective's own (the objective table's `logged`).
LOGGED = ("loss", "eval_loss", "learning_rate", "grad_norm", "train_loss", *logged_keys())
REWARD_TERM = re.compile(r"rewards/[A-Za-z0-9_]+/mean")


def log_entry(state, logs: dict, elapsed: float, tokens_per_s: float | None) -> dict:
    """One line of log.jsonl from the trainer's logs at a logging (or evaluation) step. A value
    that is not finite is left out (JSON has no NaN or Infinity: `json.loads` elsewhere would
    read what Python writes, other readers would not), as TRL's NaN mean of a reward term that
    returned None for every completion of the step."""
    entry = {"step": state.global_step, "epoch": state.epoch, "elapsed_s": round(elapsed, 3)}
    keys = [*LOGGED, *(key for key in sorted(logs) if REWARD_TERM.fullmatch(key))]
    for key in keys:
        if logs.get(key) is not None and math.isfinite(float(logs[key])):
            entry[key] = float(logs[key])
    entry["tokens_seen"] = int(state.num_input_tokens_seen)
    if tokens_per_s is not None:
        entry["tokens_per_s"] = round(tokens_per_s, 1)
    return entry


def should_stop(eval_losses: list[float], patience: int, threshold: float) -> bool:
    """True when none of the last `patience` validation losses beat the best before them."""
    if len(eval_losses) <= patience:
        return False
    best_before = min(eval_losses[:-patience])
    return all(loss > best_before - threshold for loss in eval_losses[-patience:])


def make_callbacks(log_path: Path, elapsed_before: float, patience: int | None, threshold: float):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """log.jsonl: loss, validation loss, learning rate, grad norm, tokens/s, elapsed."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.mark = (time.perf_counter(), state.num_input_tokens_seen)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            now, rate = time.perf_counter(), None
            if "loss" in logs:  # a training interval: its throughput
                then, tokens = self.mark
                rate = (state.num_input_tokens_seen - tokens) / max(now - then, 1e-9)
                self.mark = (now, state.num_input_tokens_seen)
            elapsed = elapsed_before + now - self.start
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(log_entry(state, logs, elapsed, rate), sort_keys=True) + "\n")

    class EarlyStopping(TrainerCallback):
        """Stop when the validation loss stops improving (from the restored log history)."""

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            losses = [e["eval_loss"] for e in state.log_history if "eval_loss" in e]
            if metrics and "eval_loss" in metrics and (not losses or losses[-1] != metrics["eval_loss"]):
                losses.append(metrics["eval_loss"])
            if should_stop(losses, patience, threshold):
                control.should_training_stop = True

    class FiniteGradients(TrainerCallback):
        """Fail at the first optimizer step whose gradients hold NaN or inf: the loss diverged (or
        a setting such as lora.alpha: .inf made it meaningless); the trainer's own log would
        hide it (logging_nan_inf_filter) and the weights would be saved as NaN."""

        params = None  # the trainable parameters, listed once (a scan per step cost ~1% of a step)

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if self.params is None:
                self.params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
            bad = first_non_finite_gradient(self.params)
            if bad:
                from scripts.common.cli import fail

                fail(
                    f"training diverged at step {state.global_step + 1}: the gradient of {bad} is not "
                    "finite (NaN or inf), so no model is written; lower train.learning_rate, check "
                    "train.lora.alpha and the precision, or set train.max_grad_norm"
                )

    log = JsonlLog()
    log.start = time.perf_counter()
    return [log, FiniteGradients()] + ([EarlyStopping()] if patience else [])


def first_non_finite_gradient(named_parameters) -> str | None:
    """The name of the first parameter (of `(name, parameter)` pairs) whose gradient holds NaN or
    inf, or None. One fused norm of all gradients per step (a NaN or inf makes it non-finite); only
    then each gradient is checked, so a finite total whose square overflowed is not a failure."""
    import torch

    grads = [(name, p.grad) for name, p in named_parameters if p.grad is not None]
    if not grads or torch.isfinite(torch.nn.utils.get_total_norm([g for _, g in grads])):
        return None  # one device sync per step, not one per parameter
    return next((name for name, g in grads if not torch.isfinite(g).all()), None)
