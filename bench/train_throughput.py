"""Training throughput: tunemake's train step against a bare SFTTrainer script, same run.

Prints `train_vs_bare_trl: R` (target >= 0.95): tokens/s of `scripts.train` (its callbacks,
the JSONL log, checkpoints, manifest) over a plain TRL script training the same model on the
same tokens with the same arguments. Both are timed by the trainer's own train_runtime,
alternating, median of the repeats. The demo's data and base model are built first in a
temporary copy of the workflow.

    python bench/train_throughput.py [--repeats 3] [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.train_step import train_step  # noqa: E402
from scripts.compiler.spec import load_spec_file  # noqa: E402
from tests.workflow_fixtures import copy_workflow, snakemake  # noqa: E402


def tunemake_run(train: dict, base: Path, tokens: list[Path], out: Path) -> tuple[float, int]:
    """(train seconds, tokens trained) of scripts.train, in this process."""
    manifest = train_step(train, base, tokens, out)
    return manifest["timings"]["train"], manifest["counts"]["train_tokens"]


def bare_trl_run(train: dict, base: Path, tokens: list[Path], out: Path) -> float:
    """Train seconds of a plain SFTTrainer script (what a user would write by hand)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(train["threads"])
    torch.manual_seed(train["seed"])
    table = pq.ParquetDataset([str(t) for t in tokens]).read()
    table = table.filter(pc.equal(table["split"], "train")).sort_by("id").select(["input_ids", "labels"])
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = train["lora"]
    model = get_peft_model(
        model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"])
    )
    config = SFTConfig(
        output_dir=str(out),
        max_steps=train["max_steps"],
        per_device_train_batch_size=train["per_device_batch_size"],
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler"],
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        save_total_limit=train["save_total_limit"],
        seed=train["seed"],
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset(table), processing_class=tokenizer)
    return trainer.train().metrics["train_runtime"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_workflow(Path(tmp) / "wf")
        snakemake(workdir, "data")
        run = load_spec_file(workdir / "specs/demo.yaml")[0]
        train = {**run.sections["train"], "max_steps": args.steps}
        assert train["method"] == "lora", "the bare script mirrors the demo's LoRA run"
        base = workdir / f"results/models/{run.keys['model']}/model"
        tokens = sorted((workdir / f"results/tokens/{run.keys['tokens']}").glob("*.parquet"))
        ours, bare, count = [], [], 0
        for i in range(args.repeats):
            seconds, count = tunemake_run(train, base, tokens, Path(tmp) / f"tunemake{i}")
            ours.append(seconds)
            bare.append(bare_trl_run(train, base, tokens, Path(tmp) / f"bare{i}"))
    ours_rate, bare_rate = count / statistics.median(ours), count / statistics.median(bare)
    print(f"tunemake_tokens_per_s: {ours_rate:.0f}")
    print(f"bare_trl_tokens_per_s: {bare_rate:.0f}")
    print(f"train_vs_bare_trl: {ours_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
