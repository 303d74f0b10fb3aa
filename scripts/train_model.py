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
from scripts.compiler.objectives import OBJECTIVES, resolve
from scripts.compiler.spec import SpecError, check_slice
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
from scripts.training.sft import shared_args
from scripts.training.trainable import load_trainable_model, lora_config, resolve_precision

LORA_LR_RANGE = (1e-5, 1e-3)


def load_train_slice(spec_json: str) -> dict:
    """The train section, checked; the compiler's check_slice fills every default (the blocks
    the objective and the method imply included), so a compiled slice comes back unchanged."""
    return check_slice("train", json_arg(spec_json))


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


def objective_datasets(tokens, train: dict, reference: str | None = None):
    """(train rows, validation rows or None) from the dataset function the objective table
    names, with the reference_logps step's file when the objective reads one."""
    entry = OBJECTIVES[train["objective"]]
    load = resolve(entry.dataset)
    reference = reference if entry.reference else None
    try:
        train_set = load(tokens, "train", train, reference)
        if train_set is None:
            fail("the training split is empty: check data.validation_fraction and the cleaning counts")
        if not train["eval_steps"]:
            return train_set, None
        eval_set = load(tokens, "validation", train, reference)
    except ValueError as exc:  # reference log-probs that do not belong to the tokens
        fail(str(exc))
    if eval_set is None:
        fail("train.eval_steps is set but the validation split is empty: raise data.validation_fraction")
    return train_set, eval_set


def build_trainer(args, train: dict, datasets, accumulation: int, callbacks, announce):
    """(trainer, tokenizer, precision) of the objective table's trainer function. The model
    carries its LoRA adapter unless the objective's trainer adds it itself. `callbacks()` makes
    the callbacks once the model is loaded (the log's clock starts there)."""
    from scripts.common.modeling import load_tokenizer

    entry = OBJECTIVES[train["objective"]]
    precision = resolve_precision(train["precision"])
    tokenizer = load_tokenizer(args.base)
    model = load_trainable_model(args.base, train, precision, adapter=not entry.trainer_adds_adapter)
    lora = None if train["method"] == "full" else lora_config(train)
    shared = shared_args(train, args.work_dir, precision, accumulation)
    build = resolve(entry.trainer)
    trainer = build(model, lora, shared, train, *datasets, tokenizer, callbacks(), announce=announce)
    return trainer, tokenizer, precision


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


def checked_train(spec_json: str) -> tuple[dict, int]:
    """(the train slice, gradient accumulation at this world size); a spec problem fails."""
    try:
        train = load_train_slice(spec_json)
        return train, accumulation_steps(train, int(os.environ.get("WORLD_SIZE", "1")))
    except (SpecError, ValueError) as exc:
        fail(str(exc))


def save_outputs(args, trainer, tokenizer, work: Path) -> list[dict]:
    """The model (or adapter) with the tokens' chat template and the tokenizer; the log."""
    from scripts.common.chat import TemplateError, tokens_chat_template

    trainer.save_model(args.out)
    sort_target_modules(Path(args.out) / "adapter_config.json")
    try:  # the template the tokens were rendered with goes with the model into every export
        tokenizer.chat_template = tokens_chat_template(args.tokens, tokenizer.chat_template)
    except TemplateError as exc:
        fail(str(exc))
    tokenizer.save_pretrained(args.out)
    log = read_jsonl(work / "log.jsonl")
    atomic_write_text(args.log, jsonl_text(log))
    return log


def main(argv=None):
    args = parse_args(argv)
    args.tokens = path_list(args.tokens)
    if (args.nproc > 1 or args.nodes > 1) and not is_worker():
        train_args = worker_args(sys.argv[1:] if argv is None else list(argv), args.progress)
        relaunch(train_args, args.nproc, args.nodes, args.mpi)
    start = time.perf_counter()
    train, accumulation = checked_train(args.spec_json)
    from scripts.common.modeling import pin_threads
    from scripts.training.train_log import make_callbacks

    pin_threads(train["threads"], train["seed"])
    datasets = objective_datasets(args.tokens, train, args.reference)
    work = Path(args.work_dir)
    fingerprint = inputs_fingerprint(args.tokens, args.base)
    resume, elapsed_before = prepare_work_dir(work, int(os.environ.get("RANK", "0")) == 0, fingerprint)
    warnings = lr_warnings(train)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)

    def warn(message: str) -> None:  # a warning of the trainer's construction, kept in the manifest too
        warnings.append(message)
        print(f"warning: {message}", file=sys.stderr)

    def callbacks() -> list:
        log = make_callbacks(
            work / "log.jsonl",
            elapsed_before,
            train["early_stopping_patience"],
            train["early_stopping_threshold"],
        )
        return log + [train_progress_callback(Progress(args.run, args.progress))]

    trainer, tokenizer, precision = build_trainer(args, train, datasets, accumulation, callbacks, warn)
    rng_neutral_evaluation(trainer)
    if is_final(resume):
        result = reload_final_checkpoint(trainer, resume)
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        log = save_outputs(args, trainer, tokenizer, work)
        facts = {"resume": resume, "precision": precision, "accumulation": accumulation, "warnings": warnings}
        write_train_manifest(
            args, train, trainer, result, log, facts, datasets[1], time.perf_counter() - start
        )
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
