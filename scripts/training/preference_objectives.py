"""Training with ORPO, SimPO and KTO (TRL's ORPOTrainer, CPOTrainer, KTOTrainer) from tunemake's
token shards, which already hold every example tokenized with the run's chat template
(tokenize_shard): each trainer's own tokenization is skipped, as for DPO (preference_training.py).

ORPO and SimPO read pairs as TRL's tokenize_row would write them: prompt_*, chosen_* and rejected_*
input ids, attention masks and labels (-100 on the prompt). They need no reference model. KTO reads
{prompt_ids, completion_ids, label} rows: the shards' KTO records as they are, or each pair split
into its chosen answer (desirable) and its rejected one (undesirable), as TRL's
unpair_preference_dataset does. Its reference is the run's base model: with LoRA the base with
the adapter disabled (TRL applies the LoRA config itself), with full fine-tuning a frozen copy.
"""

from __future__ import annotations

import hashlib

IGNORE = -100
PAIR_COLUMNS = [
    f"{side}_{kind}"
    for side in ("prompt", "chosen", "rejected")
    for kind in ("input_ids", "attention_mask", "labels")
    if (side, kind) != ("prompt", "labels")
]


def pair_rows(token_files, split: str):
    """The split's pairs as (prompt ids, chosen ids, rejected ids) lists, ordered by record id."""
    from scripts.common.token_splits import load_split

    table = load_split(token_files, split, ["input_ids", "prompt_length", "rejected_ids"])
    ids, lengths = table["input_ids"].to_pylist(), table["prompt_length"].to_pylist()
    prompts = [row[:n] for row, n in zip(ids, lengths)]
    return prompts, [row[n:] for row, n in zip(ids, lengths)], table["rejected_ids"].to_pylist()


def paired_dataset(token_files, split: str):
    """ORPO/SimPO rows of a split (the columns CPOTrainer and ORPOTrainer's tokenize_row write),
    or None when the split is empty."""
    from datasets import Dataset

    prompts, chosen, rejected = pair_rows(token_files, split)
    if not prompts:
        return None
    columns = {name: [] for name in PAIR_COLUMNS}
    for prompt, good, bad in zip(prompts, chosen, rejected):
        columns["prompt_input_ids"].append(prompt)
        columns["prompt_attention_mask"].append([1] * len(prompt))
        for side, response in (("chosen", good), ("rejected", bad)):
            columns[f"{side}_input_ids"].append(prompt + response)
            columns[f"{side}_attention_mask"].append([1] * (len(prompt) + len(response)))
            columns[f"{side}_labels"].append([IGNORE] * len(prompt) + response)
    return Dataset.from_dict(columns)


def _unpaired_order(rid: str, label: bool) -> str:
    """Where an example of a split pair goes: by hash, so that a batch holds desirable and
    undesirable examples of different prompts (KTO's KL term pairs each prompt with the next
    example's completion in its batch, so a pair's two sides should not sit side by side)."""
    return hashlib.sha256(f"{rid}:{label}".encode()).hexdigest()


def unpaired_dataset(token_files, split: str):
    """KTO rows {prompt_ids, completion_ids, label} of a split, or None when it is empty: the KTO
    records as stored (ordered by id), or each pair as its chosen (true) and rejected (false) answer."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    from scripts.common.token_splits import load_split

    if "label" in pq.read_schema(sorted(token_files)[0]).names:
        table = load_split(token_files, split, ["input_ids", "prompt_length", "label"])
        ids, lengths = table["input_ids"].to_pylist(), table["prompt_length"].to_pylist()
        rows = {
            "prompt_ids": [row[:n] for row, n in zip(ids, lengths)],
            "completion_ids": [row[n:] for row, n in zip(ids, lengths)],
            "label": table["label"].to_pylist(),
        }
    else:
        record_ids = load_split(token_files, split, ["id"])["id"].to_pylist()
        prompts, chosen, rejected = pair_rows(token_files, split)
        examples = sorted(
            (_unpaired_order(rid, label), prompt, completion, label)
            for rid, prompt, good, bad in zip(record_ids, prompts, chosen, rejected)
            for completion, label in ((good, True), (bad, False))
        )
        rows = {
            "prompt_ids": [e[1] for e in examples],
            "completion_ids": [e[2] for e in examples],
            "label": [e[3] for e in examples],
        }
    return Dataset.from_dict(rows) if rows["label"] else None


def _check_columns(dataset, needed, dataset_name: str):
    missing = set(needed) - set(dataset.column_names)
    if missing:
        raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}")


def _longest(*datasets) -> int:
    """The longest prompt+response of the datasets (the trainers' max_length; tokenize applied it)."""
    sides = [
        d[column] for d in datasets if d is not None for column in ("chosen_input_ids", "rejected_input_ids")
    ]
    return max(len(row) for side in sides for row in side)


def _count_pair_tokens(trainer, inputs) -> None:
    """Tokens seen (non-padding) of a batch of pairs: both sides (the Trainer looks for input_ids)."""
    import torch

    tokens = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
    tokens = torch.as_tensor(tokens, device=trainer.args.device, dtype=torch.int64)
    trainer.state.num_input_tokens_seen += trainer.accelerator.gather(tokens).sum().item()


def _experimental():
    """trl.experimental warns on import that its APIs may change: the versions are pinned here."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _pretokenized(trainer_class):
    """trainer_class (ORPOTrainer or CPOTrainer) taking rows that tokenize_row already wrote."""

    class Pretokenized(trainer_class):
        def tokenize_row(self, feature, model=None) -> dict:
            _check_columns_row(feature)
            return {}  # tokenize_shard did it, with the run's chat template

        def _track_num_input_tokens(self, inputs):
            _count_pair_tokens(self, inputs)

    return Pretokenized


def _pretokenized_trainer(trainer_class, model, config, train_set, eval_set, tokenizer, callbacks):
    """trainer_class (ORPOTrainer or CPOTrainer) built on tokenize_shard's rows."""
    return _pretokenized(trainer_class)(
        model=model,
        args=config,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _check_columns_row(feature: dict) -> None:
    missing = set(PAIR_COLUMNS) - set(feature)
    if missing:
        raise ValueError(f"a preference row lacks {sorted(missing)}")


def orpo_trainer(model, args: dict, orpo: dict, train_set, eval_set, tokenizer, callbacks):
    """An ORPOTrainer on already tokenized pairs; `model` carries its adapter (LoRA, QLoRA) or
    is trained whole. `args` are the TrainingArguments every objective shares."""
    _experimental()
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    config = ORPOConfig(
        **args,
        beta=orpo["beta"],
        max_length=_longest(train_set, eval_set),
        remove_unused_columns=False,
    )
    return _pretokenized_trainer(ORPOTrainer, model, config, train_set, eval_set, tokenizer, callbacks)


def simpo_trainer(model, args: dict, simpo: dict, train_set, eval_set, tokenizer, callbacks):
    """A CPOTrainer with the SimPO loss on already tokenized pairs (cpo_alpha 0: plain SimPO)."""
    _experimental()
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    config = CPOConfig(
        **args,
        loss_type="simpo",
        beta=simpo["beta"],
        simpo_gamma=simpo["gamma"],
        cpo_alpha=simpo["cpo_alpha"],
        max_length=_longest(train_set, eval_set),
        remove_unused_columns=False,
    )
    return _pretokenized_trainer(CPOTrainer, model, config, train_set, eval_set, tokenizer, callbacks)


def frozen_copy(model):
    """The reference of a full fine-tune: the base model as loaded, never trained."""
    import copy

    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def kto_trainer(model, lora_config, args: dict, kto: dict, train_set, eval_set, tokenizer, callbacks):
    """A KTOTrainer on already tokenized {prompt_ids, completion_ids, label} rows. `lora_config`
    is None for full fine-tuning (the reference is then a frozen copy of `model`)."""
    from trl import KTOConfig, KTOTrainer

    class TokenizedKTOTrainer(KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            _check_columns(dataset, {"prompt_ids", "completion_ids", "label"}, dataset_name)
            if not self.calculate_KL or "KL_completion_ids" in dataset.column_names:
                return dataset  # tokenize_shard did it, with the run's chat template

            def add_kl_completion_ids(examples):  # as TRL does: completions rotated within a batch
                completions = examples["completion_ids"]
                examples["KL_completion_ids"] = completions[-1:] + completions[:-1]
                return examples

            return dataset.map(
                add_kl_completion_ids, batched=True, batch_size=args.per_device_train_batch_size
            )

    config = KTOConfig(
        **args,
        beta=kto["beta"],
        desirable_weight=kto["desirable_weight"],
        undesirable_weight=kto["undesirable_weight"],
        max_length=None,  # tokenize.max_length already applied
        remove_unused_columns=False,
    )
    return TokenizedKTOTrainer(
        model=model,
        ref_model=frozen_copy(model) if lora_config is None else None,
        args=config,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config,
    )


# The objective table's functions (scripts/compiler/objectives.py): one signature for every
# objective. Datasets: (token files, split, train section, reference file) -> rows or None.
# Trainers: (model, LoRA config or None, shared TrainingArguments, train section, rows, validation
# rows, tokenizer, callbacks, announce) -> trainer, the train section's blocks filled by the compiler.


def paired_split(token_files, split: str, train: dict, reference=None):
    """Pairs of a split as ORPO and SimPO read them (paired_dataset), or None when it is empty."""
    return paired_dataset(token_files, split)


def unpaired_split(token_files, split: str, train: dict, reference=None):
    """KTO examples of a split (unpaired_dataset), or None when it is empty."""
    return unpaired_dataset(token_files, split)


def build_orpo(
    model, lora, args: dict, train: dict, train_set, eval_set, tokenizer, callbacks, announce=None
):
    """orpo_trainer with train.orpo; `model` carries its adapter already (`lora` unused)."""
    return orpo_trainer(model, args, train["orpo"], train_set, eval_set, tokenizer, callbacks)


def build_simpo(
    model, lora, args: dict, train: dict, train_set, eval_set, tokenizer, callbacks, announce=None
):
    """simpo_trainer with train.simpo; `model` carries its adapter already (`lora` unused)."""
    return simpo_trainer(model, args, train["simpo"], train_set, eval_set, tokenizer, callbacks)


def build_kto(model, lora, args: dict, train: dict, train_set, eval_set, tokenizer, callbacks, announce=None):
    """kto_trainer with train.kto; the adapter is left to TRL (`lora`, None for full
    fine-tuning), which disables it for the reference."""
    return kto_trainer(model, lora, args, train["kto"], train_set, eval_set, tokenizer, callbacks)
