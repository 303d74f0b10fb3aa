"""Fine-tune the base model on the tokenized shards with TRL's SFTTrainer (full or LoRA).

Checkpoints go to a work folder keyed by the train step's content key (outside the declared
outputs, which Snakemake deletes before a job runs); a rerun resumes from the newest complete
checkpoint there. Writes the model (or adapter) folder, a JSONL training log and a manifest.

    python -m scripts.train --spec-json "$(cat train.json)" --base results/models/KEY/model \
        --tokens tokens/*.parquet --work-dir results/work/train/KEY \
        --out results/runs/demo/train/model --log results/runs/demo/train/log.jsonl \
        --manifest results/runs/demo/train/manifest.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from scripts.common.checkpoints import newest_complete, step_of, trim_log
from scripts.common.files import atomic_write_text, jsonl_text, read_jsonl
from scripts.common.manifest import fail, write_manifest
from scripts.common.spec import SpecError, check_slice


def load_split(token_files, split: str):
    """One pyarrow table of the split's rows, ordered by record id (independent of shard names)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in sorted(token_files)])
    table = table.filter(pc.equal(table["split"], split))
    return table.take(pc.sort_indices(table, [("id", "ascending")]))


def resolve_precision(name: str) -> str:
    """auto: bf16 on a GPU that supports it, fp32 otherwise (bf16 on CPU is slower, and TRL raises)."""
    import torch

    if name != "auto":
        return name
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def sft_config(train: dict, work_dir: str, precision: str):
    import torch
    from trl import SFTConfig

    steps = (
        {"max_steps": train["max_steps"]} if "max_steps" in train else {"num_train_epochs": train["epochs"]}
    )
    return SFTConfig(
        output_dir=work_dir,
        **steps,
        per_device_train_batch_size=train["per_device_batch_size"],
        gradient_accumulation_steps=train["gradient_accumulation_steps"],
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler"],
        warmup_steps=train["warmup_ratio"],
        optim=train["optimizer"],
        weight_decay=train["weight_decay"],
        max_grad_norm=train["max_grad_norm"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=train["gradient_checkpointing"],
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        save_total_limit=train["save_total_limit"],
        seed=train["seed"],
        data_seed=train["seed"],
        report_to=[],
        disable_tqdm=False,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        max_length=None,
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )


def with_adapter(model, train: dict):
    from peft import LoraConfig, get_peft_model

    lora = train["lora"]
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def make_log_callback(log_path: Path, start: float):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """One JSON line per logging step: loss, learning rate, grad norm, tokens/s, elapsed."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            elapsed = time.perf_counter() - start
            entry = {"step": state.global_step, "epoch": state.epoch, "elapsed_s": round(elapsed, 3)}
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "train_loss"):
                if key in logs:
                    entry[key] = float(logs[key])
            entry["tokens_seen"] = int(state.num_input_tokens_seen)
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    return JsonlLog()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the train section as JSON")
    parser.add_argument("--base", required=True, help="base model folder")
    parser.add_argument("--tokens", nargs="+", required=True, help="token parquet shards")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        train = check_slice("train", json.loads(args.spec_json))
    except SpecError as exc:
        fail(str(exc))
    from datasets import Dataset
    from trl import SFTTrainer

    from scripts.common.modeling import load_base_model, load_tokenizer, pin_threads

    pin_threads(train["threads"], train["seed"])
    table = load_split(args.tokens, "train").select(["input_ids", "labels"])
    if table.num_rows == 0:
        fail("the training split is empty: check data.validation_fraction and the cleaning counts")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    resume, incomplete = newest_complete(work)
    for folder in incomplete:  # half-written by a killed job: never resumed from
        print(f"skipping incomplete checkpoint {folder}", file=sys.stderr)
        shutil.rmtree(folder)
    work_log = work / "log.jsonl"
    kept = trim_log(read_jsonl(work_log), step_of(resume)) if work_log.exists() else []
    atomic_write_text(work_log, jsonl_text(kept))
    print(f"resuming from step {step_of(resume)} ({resume})" if resume else "starting fresh", file=sys.stderr)

    precision = resolve_precision(train["precision"])
    tokenizer = load_tokenizer(args.base)
    model = load_base_model(args.base, "fp32")
    if train["method"] == "lora":
        model = with_adapter(model, train)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(train, str(work), precision),
        train_dataset=Dataset(table),
        processing_class=tokenizer,
        callbacks=[make_log_callback(work_log, start)],
    )
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        trainer.save_model(args.out)
        tokenizer.save_pretrained(args.out)
        log = read_jsonl(work_log)
        atomic_write_text(args.log, jsonl_text(log))
        losses = [e["loss"] for e in log if "loss" in e]
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        write_manifest(
            args.manifest,
            "train",
            train,
            inputs=sorted(args.tokens),
            outputs=[args.out, args.log],
            counts={
                "steps": trainer.state.global_step,
                "examples": table.num_rows,
                "train_tokens": int(trainer.state.num_input_tokens_seen),
                "resumed_from_step": step_of(resume),
                "trainable_parameters": trainable,
                "total_parameters": total,
            },
            details={
                "method": train["method"],
                "precision": precision,
                "first_loss": losses[0] if losses else float(result.training_loss),
                "final_loss": losses[-1] if losses else float(result.training_loss),
                "world_size": trainer.args.world_size,
                "log": args.log,
            },
            timings={"total": time.perf_counter() - start, "train": result.metrics["train_runtime"]},
            environment=args.environment,
        )
        print(
            f"trained {trainer.state.global_step} steps; loss {losses[:1]} -> {losses[-1:]}", file=sys.stderr
        )


if __name__ == "__main__":
    main()
