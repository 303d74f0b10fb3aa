"""Fine-tune the base model on the tokenized shards with TRL's SFTTrainer: full, LoRA or QLoRA.

Checkpoints go to a work folder keyed by the train step's content key (outside the declared
outputs, which Snakemake deletes before a job runs); a rerun resumes from the newest complete
checkpoint there. Writes the model (or adapter, with the tokenizer beside it), a JSONL
training log and a manifest. With --nproc or --nodes above 1 it restarts itself under torchrun (scripts/training/launch.py).

    python -m scripts.train_model --spec-json "$(cat train.json)" --base results/models/KEY/model \
        --tokens tokens/*.parquet --work-dir results/work/train/KEY \
        --out results/runs/demo/train/model --log results/runs/demo/train/log.jsonl \
        --manifest results/runs/demo/train.manifest.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg, path_list
from scripts.common.files import atomic_write_text, jsonl_text, read_jsonl
from scripts.common.manifest import write_manifest
from scripts.common.progress import Progress, train_progress_callback, worker_args
from scripts.common.token_splits import load_split
from scripts.compiler.spec import SpecError, apply_defaults, check_slice, section_schema
from scripts.training.checkpoints import (
    INPUTS_FILE,
    inputs_fingerprint,
    is_final,
    newest_complete,
    step_of,
    trained_from,
    trim_log,
)
from scripts.training.launch import is_worker, relaunch
from scripts.training.trainable import load_trainable_model, lora_config, resolve_precision

LORA_LR_RANGE = (1e-5, 1e-3)


def load_train_slice(spec_json: str) -> dict:
    """The validated train section; the qlora block gets its defaults when the method is qlora,
    the objective's block (dpo, orpo, simpo, kto, grpo) when it is the objective."""
    train = check_slice("train", json_arg(spec_json))
    objective = train["objective"]
    blocks = [("qlora", train["method"] == "qlora")]
    blocks += [(name, objective == name) for name in ("dpo", "orpo", "simpo", "kto", "grpo")]
    for block, needed in blocks:
        if needed:
            schema = section_schema("train")["properties"][block]
            train[block] = apply_defaults(dict(train.get(block) or {}), schema)
    return train


def accumulation_steps(train: dict, world_size: int) -> int:
    """Gradient accumulation: as given, or derived from the global batch and the world size."""
    batch = train.get("global_batch_size")
    if batch is None:
        return train["gradient_accumulation_steps"]
    per_step = train["per_device_batch_size"] * world_size
    if batch % per_step:
        raise ValueError(
            f"train.global_batch_size {batch} is not a multiple of per_device_batch_size x processes "
            f"= {train['per_device_batch_size']} x {world_size}; change one of them"
        )
    return batch // per_step


def lr_warnings(train: dict) -> list[str]:
    low, high = LORA_LR_RANGE
    rate = train["learning_rate"]
    if train["method"] in ("lora", "qlora") and not low <= rate <= high:
        return [f"train.learning_rate {rate:g} is outside {low:g}..{high:g}, the usual range for LoRA"]
    return []


def sft_config(train: dict, work_dir: str, precision: str, accumulation: int):
    from trl import SFTConfig

    return SFTConfig(
        **shared_args(train, work_dir, precision, accumulation),
        max_length=train["packing_length"] if train["packing"] else None,
        packing=train["packing"],
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )


def shared_args(train: dict, work_dir: str, precision: str, accumulation: int) -> dict:
    """The TrainingArguments of every objective (SFTConfig and DPOConfig add their own)."""
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


def datasets(tokens, train: dict):
    """(train dataset, validation dataset or None); packed rows when train.packing is on."""
    from datasets import Dataset

    train_table = load_split(tokens, "train", ["input_ids", "labels"])
    if train_table.num_rows == 0:
        fail("the training split is empty: check data.validation_fraction and the cleaning counts")
    train_set = Dataset(train_table)
    if train["packing"]:
        from trl import pack_dataset

        train_set = pack_dataset(train_set, train["packing_length"], strategy="bfd")
    if not train["eval_steps"]:
        return train_set, None
    eval_table = load_split(tokens, "validation", ["input_ids", "labels"])
    if eval_table.num_rows == 0:
        fail("train.eval_steps is set but the validation split is empty: raise data.validation_fraction")
    return train_set, Dataset(eval_table)


def preference_datasets(tokens, train: dict, reference: str | None = None):
    """(train pairs, validation pairs or None) for DPO (scripts/training/preference_training.py),
    with the reference log-probs of the reference_logps step when `reference` names its file."""
    import pyarrow.parquet as pq

    from scripts.training.preference_training import ReferenceError

    table = pq.read_table(reference) if reference else None
    try:
        return _preference_splits(tokens, train, table)
    except ReferenceError as exc:
        fail(f"{reference}: {exc}")


def _preference_splits(tokens, train: dict, reference):
    from scripts.training.preference_training import preference_dataset

    train_set = preference_dataset(tokens, "train", reference)
    if train_set is None:
        fail("the training split is empty: check data.validation_fraction and the cleaning counts")
    if not train["eval_steps"]:
        return train_set, None
    eval_set = preference_dataset(tokens, "validation", reference)
    if eval_set is None:
        fail("train.eval_steps is set but the validation split is empty: raise data.validation_fraction")
    return train_set, eval_set


OTHER_OBJECTIVES = ("orpo", "simpo", "kto")  # scripts/training/preference_objectives.py
# objectives whose trainer adds the LoRA adapter itself (the reference is the adapter disabled)
TRAINER_ADAPTER = ("dpo", "kto", "grpo")


def prompt_datasets(tokens):
    """(train prompts, None) for grpo: {prompt, prompt_ids, reference} rows (scripts/training/grpo.py)."""
    from scripts.training.grpo import prompt_dataset

    train_set = prompt_dataset(tokens, "train")
    if train_set is None:
        fail("the training split is empty: check data.validation_fraction and the cleaning counts")
    return train_set, None


def objective_datasets(tokens, train: dict):
    """(train rows, validation rows or None) for orpo, simpo or kto: pairs, or KTO examples."""
    from scripts.training.preference_objectives import split_dataset

    train_set = split_dataset(tokens, "train", train["objective"])
    if train_set is None:
        fail("the training split is empty: check data.validation_fraction and the cleaning counts")
    if not train["eval_steps"]:
        return train_set, None
    eval_set = split_dataset(tokens, "validation", train["objective"])
    if eval_set is None:
        fail("train.eval_steps is set but the validation split is empty: raise data.validation_fraction")
    return train_set, eval_set


def prepare_work_dir(work: Path, is_main: bool, fingerprint: str) -> tuple[Path | None, float]:
    """(checkpoint to resume from, elapsed seconds logged up to it); trims the work log to it.
    Checkpoints trained from other tokens or another base model are discarded, not resumed."""
    work.mkdir(parents=True, exist_ok=True)
    resume, incomplete = newest_complete(work)
    stale = trained_from(work) not in (None, fingerprint) or (resume and trained_from(work) is None)
    if stale:
        resume, incomplete = None, sorted(work.glob("checkpoint-*"))
    if not is_main:
        return resume, 0.0
    if stale:
        print(
            f"the tokens or the base model changed since the checkpoints in {work}: starting fresh",
            file=sys.stderr,
        )
        (work / "log.jsonl").unlink(missing_ok=True)
        for folder in incomplete:
            shutil.rmtree(folder, ignore_errors=True)
        incomplete = []
    atomic_write_text(work / INPUTS_FILE, fingerprint + "\n")
    for folder in incomplete:  # half-written by a killed job: never resumed from
        print(f"skipping incomplete checkpoint {folder}", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    work_log = work / "log.jsonl"
    final = is_final(resume)
    kept = trim_log(read_jsonl(work_log), step_of(resume), final) if work_log.exists() and resume else []
    atomic_write_text(work_log, jsonl_text(kept))
    if final:
        print(f"the newest checkpoint is the final step {step_of(resume)}: reloading it", file=sys.stderr)
    else:
        print(
            f"resuming from step {step_of(resume)} ({resume})" if resume else "starting fresh",
            file=sys.stderr,
        )
    return resume, max((e.get("elapsed_s", 0.0) for e in kept), default=0.0)


def reload_final_checkpoint(trainer, checkpoint: Path):
    """The model of a finished run, from its final checkpoint, without stepping again: its
    weights and trainer state are loaded as they were saved (bitwise the uninterrupted model)."""
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(checkpoint))  # weights, or the adapter for LoRA/QLoRA
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    summary = [e for e in trainer.state.log_history if "train_loss" in e]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    loss = summary[-1]["train_loss"] if summary else (losses[-1] if losses else float("nan"))
    return TrainOutput(trainer.state.global_step, loss, {"train_runtime": 0.0})


def rng_neutral_evaluation(trainer) -> None:
    """Validation draws no numbers from the training's random stream (its data order, dropout)."""
    import torch

    evaluate = trainer.evaluate

    def evaluate_forked(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return evaluate(*args, **kwargs)

    trainer.evaluate = evaluate_forked


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the train section as JSON")
    parser.add_argument("--base", required=True, help="base model folder")
    parser.add_argument(
        "--tokens", nargs="+", required=True, help="token parquet shards, or @file: a JSON list of them"
    )
    parser.add_argument("--work-dir", required=True, help="checkpoints (keyed by the train key)")
    parser.add_argument("--out", required=True, help="model or adapter folder to write")
    parser.add_argument("--log", required=True, help="log.jsonl to write")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--audit", help="the audit manifest that cleared the tokens (recorded as an input)")
    parser.add_argument("--environment")
    parser.add_argument("--reference", help="the reference log-probs (reference_logps step) of a DPO run")
    parser.add_argument("--nproc", type=int, default=1, help="processes per node (torchrun above 1)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (more than 1 needs SLURM)")
    parser.add_argument("--mpi", default="srun", help="the command that starts one task per node")
    parser.add_argument("--run", default="train", help="the run name that labels the progress lines")
    parser.add_argument(
        "--progress", help="also write progress lines to this descriptor or path (the rule's terminal)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    return parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)  # torchrun may pass the "--" on


def main(argv=None):
    args = parse_args(argv)
    args.tokens = path_list(args.tokens)
    if (args.nproc > 1 or args.nodes > 1) and not is_worker():
        train_args = worker_args(sys.argv[1:] if argv is None else list(argv), args.progress)
        relaunch(train_args, args.nproc, args.nodes, args.mpi)
    start = time.perf_counter()
    try:
        train = load_train_slice(args.spec_json)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        accumulation = accumulation_steps(train, world_size)
    except (SpecError, ValueError) as exc:
        fail(str(exc))
    from trl import SFTTrainer

    from scripts.common.modeling import load_tokenizer, pin_threads
    from scripts.training.train_log import make_callbacks

    pin_threads(train["threads"], train["seed"])
    dpo = train["objective"] == "dpo"
    if train["objective"] in OTHER_OBJECTIVES:
        train_set, eval_set = objective_datasets(args.tokens, train)
    elif train["objective"] == "grpo":
        train_set, eval_set = prompt_datasets(args.tokens)
    else:
        train_set, eval_set = (
            preference_datasets(args.tokens, train, args.reference) if dpo else datasets(args.tokens, train)
        )
    work = Path(args.work_dir)
    fingerprint = inputs_fingerprint(args.tokens, args.base)
    resume, elapsed_before = prepare_work_dir(work, int(os.environ.get("RANK", "0")) == 0, fingerprint)
    warnings = lr_warnings(train)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)

    def warn(message: str) -> None:  # a warning of the trainer's construction, kept in the manifest too
        warnings.append(message)
        print(f"warning: {message}", file=sys.stderr)

    precision = resolve_precision(train["precision"])
    tokenizer = load_tokenizer(args.base)
    model = load_trainable_model(
        args.base, train, precision, adapter=train["objective"] not in TRAINER_ADAPTER
    )
    callbacks = make_callbacks(
        work / "log.jsonl",
        elapsed_before,
        train["early_stopping_patience"],
        train["early_stopping_threshold"],
    ) + [train_progress_callback(Progress(args.run, args.progress))]
    if dpo:
        from scripts.training.preference_training import dpo_trainer

        lora = None if train["method"] == "full" else lora_config(train)
        shared = shared_args(train, str(work), precision, accumulation)
        trainer = dpo_trainer(model, lora, shared, train["dpo"], train_set, eval_set, tokenizer, callbacks)
    elif train["objective"] in OTHER_OBJECTIVES:
        from scripts.training.preference_objectives import objective_trainer

        lora = None if train["method"] == "full" else lora_config(train)
        shared = shared_args(train, str(work), precision, accumulation)
        trainer = objective_trainer(model, lora, shared, train, train_set, eval_set, tokenizer, callbacks)
    elif train["objective"] == "grpo":
        from scripts.training.grpo import grpo_trainer

        lora = None if train["method"] == "full" else lora_config(train)
        shared = shared_args(train, str(work), precision, accumulation)
        trainer = grpo_trainer(
            model, lora, shared, train["grpo"], train_set, tokenizer, callbacks, announce=warn
        )
    else:
        trainer = SFTTrainer(
            model=model,
            args=sft_config(train, str(work), precision, accumulation),
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    rng_neutral_evaluation(trainer)
    if is_final(resume):
        result = reload_final_checkpoint(trainer, resume)
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        trainer.save_model(args.out)
        sort_target_modules(Path(args.out) / "adapter_config.json")
        from scripts.common.chat import TemplateError, tokens_chat_template

        try:  # the template the tokens were rendered with goes with the model into every export
            tokenizer.chat_template = tokens_chat_template(args.tokens, tokenizer.chat_template)
        except TemplateError as exc:
            fail(str(exc))
        tokenizer.save_pretrained(args.out)
        log = read_jsonl(work / "log.jsonl")
        atomic_write_text(args.log, jsonl_text(log))
        facts = {"resume": resume, "precision": precision, "accumulation": accumulation, "warnings": warnings}
        write_train_manifest(args, train, trainer, result, log, facts, eval_set, time.perf_counter() - start)
    print(
        f"rank {trainer.args.process_index} of {trainer.args.world_size} finished",
        file=sys.stderr,
        flush=True,
    )


def sort_target_modules(adapter_config: Path) -> None:
    """PEFT writes the resolved target_modules from a set, in an order that follows Python's
    string hash seed: sorted here, so that two builds write the same bytes (tunemake.lock)."""
    if adapter_config.is_file():
        config = json.loads(adapter_config.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
            atomic_write_text(adapter_config, json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_train_manifest(args, train, trainer, result, log, facts, eval_set, total_s):
    losses = [e["loss"] for e in log if "loss" in e]
    eval_losses = [e["eval_loss"] for e in log if "eval_loss" in e]
    model, state, world = trainer.model, trainer.state, trainer.args.world_size
    write_manifest(
        args.manifest,
        "train_model",
        train,
        inputs=[*sorted(args.tokens), *(p for p in (args.audit, args.reference) if p)],
        outputs=[args.out, args.log],
        counts={
            "steps": state.global_step,
            "examples": len(trainer.train_dataset),
            "validation_examples": len(eval_set) if eval_set is not None else 0,
            "train_tokens": int(state.num_input_tokens_seen),
            "resumed_from_step": step_of(facts["resume"]),
            "steps_run": state.global_step - step_of(facts["resume"]),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": sum(p.numel() for p in model.parameters()),
        },
        details={
            "method": train["method"],
            "precision": facts["precision"],
            "first_loss": losses[0] if losses else float(result.training_loss),
            "final_loss": losses[-1] if losses else float(result.training_loss),
            "best_eval_loss": min(eval_losses) if eval_losses else None,
            "stopped_early": state.global_step < state.max_steps,
            "world_size": world,
            "gradient_accumulation_steps": facts["accumulation"],
            "global_batch_size": world * train["per_device_batch_size"] * facts["accumulation"],
            "warnings": facts["warnings"],
            "log": args.log,
        },
        timings={"total": total_s, "train": result.metrics["train_runtime"]},
        environment=args.environment,
    )
    print(f"trained {state.global_step} steps; loss {losses[:1]} -> {losses[-1:]}", file=sys.stderr)


if __name__ == "__main__":
    main()
