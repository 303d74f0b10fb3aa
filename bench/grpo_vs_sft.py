"""GRPO against SFT for the same train time, on the GRPO demo (docs/training.md, GRPO).

Builds `make demo-grpo` in a temporary copy of the workflow (examples/grpo/sft_early.yaml, then
examples/grpo/grpo_digits.yaml from it), then an SFT run from the same early-stopped model given
the GRPO run's train time (its steps sized by the early run's seconds per step), and prints the
exact match of the three models on the validation split, the train seconds, and
`sft_vs_grpo_exact_match`: the SFT run's exact match over the GRPO run's. A figure, not a target:
SFT on the demo converges fast where references exist (measured 0.523 -> GRPO 0.769 in 26 s of
training; SFT for the same time, 531 steps, 1.000).

    python bench/grpo_vs_sft.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml  # noqa: E402

from tests.workflow_fixtures import copy_workflow, snakemake  # noqa: E402

SPECS = "examples/grpo/sft_early.yaml,examples/grpo/grpo_digits.yaml"


def report(workdir: Path, run: str) -> dict:
    return json.loads((workdir / f"results/runs/{run}/evaluate/report.json").read_text())["metrics"]


def train_seconds(workdir: Path, run: str) -> float:
    return json.loads((workdir / f"results/runs/{run}/train.manifest.json").read_text())["timings"]["train"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_workflow(Path(tmp) / "wf")
        snakemake(workdir, "evaluate", "--config", f"specs={SPECS}", timeout=1800)
        start = report(workdir, "sft_early")["tuned"]["exact_match"]
        grpo = report(workdir, "grpo_digits")["tuned"]["exact_match"]
        early = yaml.safe_load((workdir / "examples/grpo/sft_early.yaml").read_text())
        seconds_per_step = train_seconds(workdir, "sft_early") / early["train"]["max_steps"]
        grpo_s = train_seconds(workdir, "grpo_digits")
        steps = max(1, round(grpo_s / seconds_per_step))
        more = {**early, "model": {"from_run": "sft_early"}}
        more["train"] = {**early["train"], "max_steps": steps, "save_steps": steps}
        (workdir / "examples/grpo/sft_more.yaml").write_text(yaml.safe_dump(more, sort_keys=False))
        snakemake(workdir, "evaluate", "--config", f"specs={SPECS},examples/grpo/sft_more.yaml", timeout=1800)
        sft = report(workdir, "sft_more")["tuned"]["exact_match"]
        print(f"exact match on the validation split: early-stopped SFT {start:.3f}")
        print(f"+ GRPO ({grpo_s:.0f} s train): {grpo:.3f}")
        print(
            f"+ SFT for the same time ({steps} steps, {train_seconds(workdir, 'sft_more'):.0f} s): {sft:.3f}"
        )
        print(f"sft_vs_grpo_exact_match: {sft / grpo:.2f}")


if __name__ == "__main__":
    main()
