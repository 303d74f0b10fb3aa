"""The objective table: one record per train.objective, read by everything that depends on it.

The spec schema's enum (tests/test_tables.py ties them), the compiler's shape rules and the
blocks it fills (spec_rules.py, schema_check.py), the step table (steps.py: whether a run has a
reference_logps step), the training script (scripts/train_model.py: which dataset and trainer
to build) and the train log (scripts/training/train_log.py: which keys it keeps) all read it.
Adding an objective is one entry here plus its block in schemas/spec/train.schema.json (and the
two functions the entry names in scripts/training/).

Stdlib only: the compiler runs at DAG-build time. The training functions are named, not
imported (`resolve` imports them in the training stage).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

# The record kinds of data.sources (record_kind), in the order a refusal reports them.
KINDS = ("text", "pairs", "labelled", "prompt", "chat")


def record_kind(fields) -> str:
    """What a source's mapped fields make its records: preference pairs, KTO records (label),
    plain text, prompt/completion (or alpaca), or chat messages."""
    fields = set(fields)
    if {"chosen", "rejected"} & fields:
        return "pairs"
    if "label" in fields:
        return "labelled"
    if fields == {"text"}:
        return "text"
    return "chat" if "messages" in fields else "prompt"


@dataclass(frozen=True)
class Objective:
    """What the compiler, the steps and the training script need to know of one objective.

    accepts: the record kinds it trains on. refusals: record kind (or "*" for any other) ->
    the message for data of a kind it does not accept ({name}: the objective). reference: it
    reads the reference_logps step's file. block: its settings block in the train schema (the
    compiler fills its defaults when the objective is chosen). logged: the trainer's log keys
    kept in log.jsonl beside the common ones. dataset, trainer: "module:function" in
    scripts/training/ (see train_model.py for their signatures). trainer_adds_adapter: the
    trainer adds the LoRA adapter itself (its reference is the model with it disabled), so the
    model is loaded without one. checks: "module:function" names of extra compile-time rules
    (train section -> [(path, message)])."""

    accepts: tuple[str, ...]
    refusals: dict[str, str]
    dataset: str
    trainer: str
    block: str | None = None
    reference: bool = False
    trainer_adds_adapter: bool = False
    logged: tuple[str, ...] = ()
    checks: tuple[str, ...] = field(default=())


# How much the policy prefers the chosen response and by what margin, and the rewards and mean
# log-probabilities of each side (KTO: of the desirable and the undesirable completions).
PREFERENCE_LOGGED = (
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
)
NEEDS_PAIRS = {
    "labelled": "train.objective: {name} trains on preference pairs, but data.sources map KTO records "
    "(prompt, completion, label); use train.objective: kto, or map chosen and rejected fields",
    "*": "train.objective: {name} trains on preference pairs, but data.sources map no chosen and "
    "rejected fields; map them (fields: {{prompt: ..., chosen: ..., rejected: ...}}) or use "
    "train.objective: sft",
}
_GRPO_NOT = (
    "train.objective: grpo rewards sampled completions against one reference per prompt, but "
    "data.sources map {what}; map prompt and completion (the completion is the reference), or use "
    "train.objective: dpo, orpo, simpo or kto for this data"
)
_PREFERENCE = "scripts.training.preference_objectives"

OBJECTIVES: dict[str, Objective] = {
    "sft": Objective(
        accepts=("text", "prompt", "chat", "pairs"),  # a pair trains on its chosen response
        refusals={
            "labelled": "train.objective: sft would train on the undesirable completions of KTO records "
            "(field label) too; use train.objective: kto, or map no label field and keep only the "
            "desirable records",
        },
        dataset="scripts.training.sft:split_dataset",
        trainer="scripts.training.sft:build_trainer",
    ),
    "dpo": Objective(
        accepts=("pairs",),
        refusals=NEEDS_PAIRS,
        block="dpo",
        reference=True,
        trainer_adds_adapter=True,
        logged=PREFERENCE_LOGGED,
        dataset="scripts.training.preference_training:split_dataset",
        trainer="scripts.training.preference_training:build_trainer",
        checks=("scripts.compiler.objective_rules:dpo_errors",),
    ),
    "orpo": Objective(
        accepts=("pairs",),
        refusals=NEEDS_PAIRS,
        block="orpo",
        logged=(*PREFERENCE_LOGGED, "nll_loss", "log_odds_ratio"),
        dataset=f"{_PREFERENCE}:paired_split",
        trainer=f"{_PREFERENCE}:build_orpo",
    ),
    "simpo": Objective(
        accepts=("pairs",),
        refusals=NEEDS_PAIRS,
        block="simpo",
        logged=(*PREFERENCE_LOGGED, "nll_loss"),
        dataset=f"{_PREFERENCE}:paired_split",
        trainer=f"{_PREFERENCE}:build_simpo",
    ),
    "kto": Objective(
        accepts=("labelled", "pairs"),  # kto splits a pair into a desirable and an undesirable example
        refusals={
            "*": "train.objective: kto trains on completions labelled desirable or not, but data.sources "
            "map no label field (nor chosen and rejected, which kto splits into a desirable and an "
            "undesirable example); map one (fields: {{prompt: ..., completion: ..., label: ...}}) or use "
            "train.objective: sft",
        },
        block="kto",
        trainer_adds_adapter=True,
        logged=(*PREFERENCE_LOGGED, "kl"),  # its estimate of the KL divergence from the reference
        dataset=f"{_PREFERENCE}:unpaired_split",
        trainer=f"{_PREFERENCE}:build_kto",
        checks=("scripts.compiler.objective_rules:kto_errors",),
    ),
    "grpo": Objective(
        accepts=("prompt", "chat"),
        refusals={
            "text": "train.objective: grpo samples completions for prompts, but a source maps only text "
            "(no prompt); map prompt and completion (or chat messages) in data.sources, or use "
            "train.objective: sft",
            "pairs": _GRPO_NOT.format(what="preference pairs (chosen, rejected)"),
            "labelled": _GRPO_NOT.format(what="KTO records (label)"),
        },
        block="grpo",
        trainer_adds_adapter=True,
        # the total reward (weighted sum of the terms) and its spread, the sampled completions'
        # mean length in tokens and the share cut at max_completion_length; each term's mean is
        # rewards/<term>/mean (train_log.REWARD_TERM)
        logged=("kl", "reward", "reward_std", "completions/mean_length", "completions/clipped_ratio"),
        dataset="scripts.training.grpo:split_dataset",
        trainer="scripts.training.grpo:build_trainer",
        checks=("scripts.compiler.objective_rules:grpo_settings_errors",),
    ),
}

# The settings block a train.method implies (its defaults are filled when the method is chosen).
METHOD_BLOCKS = {"qlora": "qlora"}


def implied_blocks(train: dict) -> list[str]:
    """The settings blocks the train section's objective and method imply."""
    block = OBJECTIVES[train["objective"]].block
    method = METHOD_BLOCKS.get(train["method"])
    return [name for name in (block, method) if name]


def objective_blocks() -> list[str]:
    """Every objective's settings block, in table order."""
    return [o.block for o in OBJECTIVES.values() if o.block]


def block_of(objective: str | None) -> str | None:
    """The settings block of an objective; None for one without (or an unknown name)."""
    found = OBJECTIVES.get(objective) if objective else None
    return found.block if found else None


def reads_reference(objective: str) -> bool:
    """Whether a run of this objective reads the reference_logps step's file."""
    return OBJECTIVES[objective].reference


def logged_keys() -> tuple[str, ...]:
    """The trainer log keys of every objective, each once, in table order."""
    keys: dict[str, None] = {}
    for objective in OBJECTIVES.values():
        keys.update(dict.fromkeys(objective.logged))
    return tuple(keys)


def resolve(dotted: str):
    """The function a "module:function" name of the table names (imported when first asked)."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)
