"""DPO throughput and reference passes: tunemake's DPO step against a plain DPOTrainer script, same run.

Prints, both sides timed here, alternating, median of a three-value beta sweep on each side:
- `dpo_vs_bare_trl` (target >= 0.95): tokens/s of one tunemake DPO run, its reference_logps job
  included (nothing shared), over a plain TRL script that trains the same LoRA model on the same
  pairs with the same arguments (TRL's default: the reference runs with every step);
- `dpo_train_step_vs_bare_trl`: the same without the reference job (what each further run of
  a sweep costs: the reference is computed once);
- `sweep_reference_passes`: pairs run through the reference model in the three-run sweep over
  those of one run (target 1.0; `bare_trl_sweep_reference_passes` shows the plain scripts' 3.0).
  Counted by wrapping the two places TRL runs the reference (its precompute pass and the
  training step).

    python bench/dpo_throughput.py [--steps 50] [--pairs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml  # noqa: E402

from bench.train_step import train_step  # noqa: E402
from scripts.compiler.spec import load_specs  # noqa: E402
from tests.workflow_fixtures import copy_workflow, snakemake  # noqa: E402

BETAS = [0.05, 0.1, 0.5]
REFERENCE_PAIRS = [0]  # pairs through TRL's compute_ref_log_probs, in this process


def count_reference_pairs():
    """Count the pairs every reference forward of TRL's DPOTrainer runs: the precompute pass
    (compute_ref_log_probs) and, without it, the reference forward inside each training step
    (_compute_loss). Each batch holds the chosen rows, then the rejected ones: 2 rows per pair."""
    from trl import DPOTrainer

    precompute, step = DPOTrainer.compute_ref_log_probs, DPOTrainer._compute_loss

    def counted_precompute(self, model, inputs):
        REFERENCE_PAIRS[0] += inputs["input_ids"].shape[0] // 2
        return precompute(self, model, inputs)

    def counted_step(self, model, inputs, return_outputs):
        if not self.precompute_ref_logps:
            REFERENCE_PAIRS[0] += inputs["input_ids"].shape[0] // 2
        return step(self, model, inputs, return_outputs)

    DPOTrainer.compute_ref_log_probs = counted_precompute
    DPOTrainer._compute_loss = counted_step


def pairs_workflow(workdir: Path, pairs: int, steps: int) -> dict:
    """The demo's records as preference pairs (rejected: the words reversed), one DPO spec with a
    three-value beta sweep; returns the data's record texts by id for the plain script."""
    records = [
        json.loads(line) for line in (workdir / "data/demo/spell_digits.jsonl").read_text().splitlines()
    ]
    rows = []
    for r in records:
        words = r["completion"].split()
        if words[::-1] != words and len(rows) < pairs:
            rows.append({"prompt": r["prompt"], "chosen": r["completion"], "rejected": " ".join(words[::-1])})
    (workdir / "data/pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    (workdir / "specs/demo.yaml").unlink()
    fields = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    spec = {
        **demo,
        "data": {**demo["data"], "sources": [{"path": "data/pairs.jsonl", "fields": fields}]},
        "train": {**demo["train"], "objective": "dpo", "max_steps": steps, "save_steps": steps},
        "sweep": {"train.dpo.beta": BETAS},
    }
    (workdir / "specs/dpo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return rows


def reference_job(slice_: dict, base: Path, tokens: list[Path], out: Path) -> float:
    from scripts.reference_logps import main

    start = time.perf_counter()
    main(
        [
            "--spec-json", json.dumps(slice_), "--base", str(base), "--tokens", *map(str, tokens),
            "--out", str(out / "logps.parquet"), "--manifest", str(out / "logps.manifest.json"),
        ]
    )  # fmt: skip
    return time.perf_counter() - start


def tunemake_run(
    train: dict, base: Path, tokens: list[Path], reference: Path, out: Path
) -> tuple[float, int]:
    """(train seconds, tokens trained) of scripts.train_model on the stored reference log-probs."""
    manifest = train_step(train, base, tokens, out, "--reference", str(reference))
    return manifest["timings"]["train"], manifest["counts"]["train_tokens"]


def bare_trl_run(train: dict, base: Path, rows: list[dict], out: Path) -> float:
    """Train seconds of a plain DPOTrainer script on the same pairs (as text: TRL tokenizes)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(train["threads"])
    torch.manual_seed(train["seed"])
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = train["lora"]
    config = DPOConfig(
        output_dir=str(out),
        max_steps=train["max_steps"],
        per_device_train_batch_size=train["per_device_batch_size"],
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler"],
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        seed=train["seed"],
        beta=train["dpo"]["beta"],
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(str(base)),
        peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"]),
    )
    return trainer.train().metrics["train_runtime"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args(argv)
    count_reference_pairs()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_workflow(Path(tmp) / "wf")
        rows = pairs_workflow(workdir, args.pairs, args.steps)
        snakemake(workdir, "data")
        runs = load_specs(sorted((workdir / "specs").glob("*.yaml")))
        keys = {run.keys["reference"] for run in runs}
        assert len(runs) == 3 and runs[0].sections["train"]["method"] == "lora"
        base = workdir / f"results/models/{runs[0].keys['model']}/model"
        tokens = sorted((workdir / f"results/tokens/{runs[0].keys['tokens']}").glob("*.parquet"))
        from scripts.compiler.steps import step_slices

        ours_reference = []
        for key in sorted(keys):  # one per distinct reference: the sweep shares one
            run = next(r for r in runs if r.keys["reference"] == key)
            slice_ = step_slices(run.sections)["reference_logps"][1]
            ours_reference.append(reference_job(slice_, base, tokens, Path(tmp) / f"reference-{key}"))
        reference_pairs = REFERENCE_PAIRS[0]
        reference = Path(tmp) / f"reference-{runs[0].keys['reference']}/logps.parquet"
        ours, bare, bare_pairs, count = [], [], [], 0
        for i, run in enumerate(runs):
            train = run.sections["train"]
            seconds, count = tunemake_run(train, base, tokens, reference, Path(tmp) / f"tunemake{i}")
            ours.append(seconds)
            before = REFERENCE_PAIRS[0]
            bare.append(bare_trl_run(train, base, rows, Path(tmp) / f"bare{i}"))
            bare_pairs.append(REFERENCE_PAIRS[0] - before)
        ours_pairs = REFERENCE_PAIRS[0] - sum(bare_pairs)  # the reference jobs' and the train runs'
    step, bare_s = statistics.median(ours), statistics.median(bare)
    one_run = step + ours_reference[0]
    print(
        f"reference_job_s: {ours_reference[0]:.1f} ({reference_pairs} pairs, {len(keys)} job(s) for {len(runs)} runs)"
    )
    print(f"tunemake_train_step_s: {step:.1f}  bare_trl_train_s: {bare_s:.1f}  ({args.steps} steps)")
    print(f"tunemake_tokens_per_s: {count / one_run:.0f} (reference job included)")
    print(f"bare_trl_tokens_per_s: {count / bare_s:.0f}")
    print(f"dpo_vs_bare_trl: {bare_s / one_run:.2f}")
    print(f"dpo_train_step_vs_bare_trl: {bare_s / step:.2f}")
    print(f"sweep_reference_passes: {ours_pairs / reference_pairs:.2f}")
    print(f"bare_trl_sweep_reference_passes: {sum(bare_pairs) / bare_pairs[0]:.2f}")


if __name__ == "__main__":
    main()
