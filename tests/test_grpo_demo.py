"""The GRPO demo of the README (issue 16's acceptance): the demo speller stopped early
(examples/grpo/sft_early.yaml, greedy exact match ~0.52; the session's shared build, copied),
then GRPO with an exact-match reward (examples/grpo/grpo_digits.yaml), run with `make
demo-grpo`'s command, raises exact match on the validation split by at least 0.2.

The comparison docs/training.md prints beside it (SFT from the same start for the GRPO run's
train time) is a figure, not a promise: bench/grpo_vs_sft.py prints it."""

from __future__ import annotations

import json

import pytest

from tests.workflow_fixtures import SFT_EARLY, copy_built, jobs_run, make_target_args, snakemake

SPECS = f"{SFT_EARLY},examples/grpo/grpo_digits.yaml"


def report(workdir, run):
    return json.loads((workdir / f"results/runs/{run}/evaluate/report.json").read_text())["metrics"]


@pytest.mark.slow
def test_grpo_raises_exact_match_of_the_early_stopped_demo(sft_early_build, tmp_path):
    workdir = copy_built(sft_early_build, tmp_path / "wf")
    args = make_target_args("demo-grpo")
    assert args == ["evaluate", "--config", f"specs={SPECS}"], args
    ran = jobs_run(snakemake(workdir, *args, timeout=1800))
    assert ran["train_model"] == 1 and ran["evaluate_model"] == 1, ran  # GRPO only: its start came built
    start = report(workdir, "sft_early")["tuned"]["exact_match"]
    grpo = report(workdir, "grpo_digits")
    assert grpo["base"]["exact_match"] == pytest.approx(start)  # the GRPO run starts from it
    print(
        f"\nexact match on the validation split: early-stopped SFT {start:.3f}; + GRPO {grpo['tuned']['exact_match']:.3f}"
    )
    assert start < 0.7  # stopped early: well below 1
    assert grpo["tuned"]["exact_match"] >= start + 0.2
