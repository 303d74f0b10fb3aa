"""Supervised fine-tuning (next-token loss on the responses) with TRL's SFTTrainer, from the
token shards (input_ids and labels, -100 on the prompt), and the TrainingArguments every
objective shares. The objective table (scripts/compiler/objectives.py) names this module's
`split_dataset` and `build_trainer` for objective sft."""

from __future__ import annotations

import os


def shared_args(train: dict, work_dir: str, precision: str, accumulation: int) -> dict:
    """The TrainingArguments of every objective (each trainer's config adds its own)."""
    import torch

    steps = (
        {"max_steps": train["max_steps"]} if "max_steps" in train else {"num_train_epochs": train["epochs"]}
    )
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    evaluation = {"eval_strategy": "no"}
    if train["eval_steps"]:
        evaluation = {"eval_strategy": "steps", "eval_steps": train["eval_steps"]}
    return dict(
        output_dir=work_dir,
        **steps,
        **evaluation,
        per_device_train_batch_size=train["per_device_batch_size"],
        per_device_eval_batch_size=train["eval_batch_size"],
        gradient_accumulation_steps=accumulation,
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler"],
        warmup_steps=train["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        optim=train["optimizer"],
        weight_decay=train["weight_decay"],
        max_grad_norm=train["max_grad_norm"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=("nccl" if torch.cuda.is_available() else "gloo") if distributed else None,
        gradient_checkpointing=train["gradient_checkpointing"],
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        save_total_limit=train["save_total_limit"],
        seed=train["seed"],
        data_seed=train["seed"],
        report_to=[],
        disable_tqdm=True,  # scripts/common/progress.py writes the progress lines (log and terminal)
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
    )


def split_dataset(tokens, split: str, train: dict, reference=None):
    """The split's {input_ids, labels} rows (the training split packed when train.packing is
    on), or None when it is empty. `reference` is not read (sft has no reference)."""
    from datasets import Dataset

    from scripts.common.token_splits import load_split

    table = load_split(tokens, split, ["input_ids", "labels"])
    if table.num_rows == 0:
        return None
    rows = Dataset(table)
    if split == "train" and train["packing"]:
        from trl import pack_dataset

        rows = pack_dataset(rows, train["packing_length"], strategy="bfd")
    return rows


def build_trainer(
    model, lora, args: dict, train: dict, train_set, eval_set, tokenizer, callbacks, announce=None
):
    """An SFTTrainer on the shards' rows; `model` carries its adapter already (`lora` unused)."""
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        **args,
        max_length=train["packing_length"] if train["packing"] else None,
        packing=train["packing"],
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
