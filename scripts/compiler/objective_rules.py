"""Compile-time rules of single objectives that JSON Schema states badly, named by their entries
in the objective table (objectives.py `checks`): train section -> [(spec path, message)].

Values arrive validated and with their defaults filled, the objective's block included."""

from __future__ import annotations

SMOOTHED_LOSSES = {"robust", "exo_pair"}


def dpo_errors(train: dict) -> list[tuple[list, str]]:
    """label_smoothing only with the losses that read it, and exo_pair needs it."""
    dpo, where = train["dpo"], ["train", "dpo", "label_smoothing"]
    if dpo["label_smoothing"] > 0 and dpo["loss_type"] not in SMOOTHED_LOSSES:
        return [
            (
                where,
                f"train.dpo.label_smoothing: the {dpo['loss_type']} loss ignores it; use "
                "loss_type robust or exo_pair, or remove label_smoothing",
            )
        ]
    if dpo["loss_type"] == "exo_pair" and not dpo["label_smoothing"]:
        return [(where, "train.dpo.label_smoothing: the exo_pair loss needs it above 0")]
    return []


def kto_errors(train: dict) -> list[tuple[list, str]]:
    """KTO's KL estimate needs other examples in the batch."""
    if train["per_device_batch_size"] >= 2:
        return []
    return [
        (
            ["train", "per_device_batch_size"],
            "train.per_device_batch_size: kto estimates its KL term from the other examples of a batch, "
            "so it needs at least 2; raise it (and lower gradient_accumulation_steps to keep the batch)",
        )
    ]


def grpo_settings_errors(train: dict) -> list[tuple[list, str]]:
    """grpo needs its rewards (its block has no defaults for them); its validation would sample
    and score generations at every eval_steps (evaluation compares the start and the tuned model
    once, after training)."""
    errors = []
    if "grpo" not in train:
        errors.append(
            (
                ["train", "objective"],
                "train.grpo: objective grpo needs its rewards; add for example train.grpo: {rewards: "
                "[{metric: exact_match}]}",
            )
        )
    if train["eval_steps"] is not None:
        errors.append(
            (
                ["train", "eval_steps"],
                "train.eval_steps: grpo has no validation loss to watch (its loss is not a quality measure); "
                "remove train.eval_steps (and early_stopping_patience): the evaluate step compares the start "
                "model and the tuned model with evaluate.metrics",
            )
        )
    return errors
