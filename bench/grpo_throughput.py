"""GRPO throughput: tunemake's GRPO step against a plain GRPOTrainer script, same run.

Prints `grpo_vs_bare_trl` (target >= 0.95): completions/s of scripts/train_model.py (in
process, on the demo's token shards, a LoRA run with an exact-match and a chrF reward declared
in the spec) over a plain TRL script that trains the same LoRA model on the same prompts
(as text: TRL tokenizes them), with the same rewards (plain functions: string equality and
sacrebleu's sentence chrF) and the same arguments. Both sides timed here after an untimed
warm-up run, alternating (each side first in turn), the median of --repeats runs each;
completions/s counts the completions sampled in training (max_steps x per_device_batch_size)
over the trainer's train_runtime.

    python bench/grpo_throughput.py [--steps 20] [--batch 32] [--generations 4] [--repeats 3]
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

import yaml  # noqa: E402

from bench.train_step import train_step  # noqa: E402
from scripts.compiler.spec import load_specs  # noqa: E402
from tests.workflow_fixtures import copy_workflow, snakemake  # noqa: E402

REWARDS = [{"metric": "exact_match"}, {"metric": "chrf", "weight": 0.5}]


def grpo_workflow(workdir: Path, steps: int, batch: int, generations: int) -> None:
    """The demo spec turned into one GRPO run from the built base model."""
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    (workdir / "specs/demo.yaml").unlink()
    train = {
        **demo["train"],
        "objective": "grpo",
        "learning_rate": 3e-4,
        "max_steps": steps,
        "save_steps": steps,
        "per_device_batch_size": batch,
        "grpo": {
            "num_generations": generations,
            "max_completion_length": 12,
            "temperature": 1.0,
            "top_k": 3,
            "beta": 0.0,
            "rewards": REWARDS,
        },
    }
    (workdir / "specs/grpo.yaml").write_text(yaml.safe_dump({**demo, "train": train}, sort_keys=False))


def tunemake_run(train: dict, base: Path, tokens: list[Path], out: Path) -> tuple[float, int]:
    """(train seconds, completions sampled) of scripts.train_model, in this process."""
    manifest = train_step(train, base, tokens, out)
    return manifest["timings"]["train"], train["max_steps"] * train["per_device_batch_size"]


def exact_match(completions, reference, **kwargs):
    return [float(c.strip() == r.strip()) for c, r in zip(completions, reference)]


def chrf(completions, reference, **kwargs):
    from sacrebleu.metrics import CHRF

    scorer = CHRF()
    return [scorer.sentence_score(c.strip(), [r]).score / 100 for c, r in zip(completions, reference)]


def bare_trl_run(train: dict, base: Path, rows: list[dict], out: Path) -> tuple[float, int]:
    """(train seconds, completions sampled) of a plain GRPOTrainer script on the prompt texts."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(train["threads"])
    torch.manual_seed(train["seed"])
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    grpo, lora = train["grpo"], train["lora"]
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=train["max_steps"],
        per_device_train_batch_size=train["per_device_batch_size"],
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler"],
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        seed=train["seed"],
        num_generations=grpo["num_generations"],
        max_completion_length=grpo["max_completion_length"],
        temperature=grpo["temperature"],
        top_k=grpo["top_k"],
        beta=grpo["beta"],
        epsilon=grpo["epsilon"],
        reward_weights=[term["weight"] for term in grpo["rewards"]],
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[exact_match, chrf],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(str(base)),
        peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"]),
    )
    seconds = trainer.train().metrics["train_runtime"]
    return seconds, train["max_steps"] * train["per_device_batch_size"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="completions per step")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_workflow(Path(tmp) / "wf")
        grpo_workflow(workdir, args.steps, args.batch, args.generations)
        snakemake(workdir, "data")
        (run,) = load_specs(sorted((workdir / "specs").glob("*.yaml")))
        train = run.sections["train"]
        base = workdir / f"results/models/{run.keys['model']}/model"
        tokens = sorted((workdir / f"results/tokens/{run.keys['tokens']}").glob("*.parquet"))
        from scripts.training.grpo import prompt_dataset

        rows = [{"prompt": r["prompt"], "reference": r["reference"]} for r in prompt_dataset(tokens, "train")]
        # untimed: the first run in a process pays one-off costs (imports, kernel setup)
        bare_trl_run({**train, "max_steps": 2, "save_steps": 2}, base, rows, Path(tmp) / "warmup")
        ours, bare = [], []
        for i in range(args.repeats):  # alternating, and each side first in turn
            sides = [("ours", ours), ("bare", bare)][:: 1 if i % 2 == 0 else -1]
            for side, rates in sides:
                out = Path(tmp) / f"{side}{i}"
                if side == "ours":
                    seconds, count = tunemake_run(train, base, tokens, out)
                else:
                    seconds, count = bare_trl_run(train, base, rows, out)
                rates.append(count / seconds)
    ours_rate, bare_rate = statistics.median(ours), statistics.median(bare)
    print(
        f"setup: {args.steps} steps x {args.batch} completions ({args.generations} per prompt), "
        f"{args.repeats} alternating runs per side"
    )
    print(f"tunemake_completions_per_s: {ours_rate:.1f}  ({', '.join(f'{r:.1f}' for r in ours)})")
    print(f"bare_trl_completions_per_s: {bare_rate:.1f}  ({', '.join(f'{r:.1f}' for r in bare)})")
    print(f"grpo_vs_bare_trl: {ours_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
