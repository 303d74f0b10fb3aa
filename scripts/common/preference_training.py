"""Training on preference pairs with TRL's DPOTrainer, from tunemake's token shards.

The shards already hold each pair tokenized with the chat template (tokenize_shard: prompt+chosen
in input_ids, the prompt's length, the rejected response's ids), so TRL's own tokenization is
skipped (TokenizedDPOTrainer). The reference is the run's base model: with LoRA the base with
the adapter disabled (TRL applies the LoRA config itself), with full fine-tuning a frozen copy
loaded from the base folder.
"""

from __future__ import annotations


def preference_dataset(token_files, split: str):
    """{prompt_ids, chosen_ids, rejected_ids} rows of a split (ordered by record id), or None
    when the split is empty."""
    from datasets import Dataset

    from scripts.common.token_splits import load_split

    table = load_split(token_files, split, ["input_ids", "prompt_length", "rejected_ids"])
    if table.num_rows == 0:
        return None
    ids, lengths = table["input_ids"].to_pylist(), table["prompt_length"].to_pylist()
    return Dataset.from_dict(
        {
            "prompt_ids": [row[:n] for row, n in zip(ids, lengths)],
            "chosen_ids": [row[n:] for row, n in zip(ids, lengths)],
            "rejected_ids": table["rejected_ids"].to_pylist(),
        }
    )


def dpo_trainer(model, lora_config, args: dict, dpo: dict, train_set, eval_set, tokenizer, callbacks):
    """A DPOTrainer on already tokenized pairs. `args` are the TrainingArguments every objective
    shares (scripts/train_model.py); `lora_config` is None for full fine-tuning."""
    from trl import DPOConfig, DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}")
            return dataset  # tokenize_shard did it, with the run's chat template

    config = DPOConfig(
        **args,
        beta=dpo["beta"],
        loss_type=[dpo["loss_type"]],
        label_smoothing=dpo["label_smoothing"],
        max_length=None,  # tokenize.max_length already applied
        precompute_ref_log_probs=False,
    )
    return TokenizedDPOTrainer(
        model=model,
        args=config,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config,
    )
