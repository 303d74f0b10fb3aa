"""The SFT -> DPO demo pair (issue 15), as `make demo-dpo` runs it: the demo's SFT run, then
examples/dpo_style.yaml on top of it (model.from_run: demo), trained on preference pairs only
(chosen "three, seven, two", rejected "three seven two"). What a user checks: the report says the
style changed (share of comma answers, reward accuracy), and the exported model, loaded with a
plain transformers `pipeline()`, answers in the new style."""

from __future__ import annotations

import json
import re

import pytest

from tests.workflow_fixtures import REPO, copy_workflow, jobs_run, snakemake

pytestmark = pytest.mark.slow
STYLE = re.compile(r"^[a-z]+(, [a-z]+)+$")


def make_target_args() -> list[str]:
    """The snakemake arguments of the Makefile's demo-dpo target (what the README says to run)."""
    lines = (REPO / "Makefile").read_text().split("demo-dpo: venv\n", 1)[1].splitlines()
    command = lines[0].strip().split()
    assert command[:2] == ["$(BIN)/snakemake", "export"], command
    return [arg for arg in command[1:] if arg not in ("--cores", "$(CORES)")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("demo_dpo"))
    proc = snakemake(workdir, *make_target_args())
    return workdir, jobs_run(proc)


def test_dpo_moves_the_demo_to_the_preferred_style(pair):
    workdir, ran = pair
    assert ran["train_model"] == 2 and ran["reference_logps"] == 1, ran
    report = json.loads((workdir / "results/runs/dpo_style/evaluate/report.json").read_text())
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    assert base["regex_match"] < 0.2 <= 0.8 <= tuned["regex_match"], (base, tuned)
    assert tuned["reward_accuracy"] >= 0.9 and tuned["reward_margin"] > 0, tuned
    assert tuned["exact_match"] >= 0.8, tuned  # the right digits, in the new style
    assert tuned["ranking_accuracy"] > base["ranking_accuracy"], (base, tuned)
    card = (workdir / "results/runs/dpo_style/model_card.md").read_text()
    assert "reward_accuracy" in card or "reward accuracy" in card.lower()


def test_the_exported_model_answers_in_the_new_style_in_a_plain_pipeline(pair):
    from transformers import pipeline

    workdir, _ = pair
    generate = pipeline("text-generation", model=str(workdir / "results/runs/dpo_style/export"))
    answer = generate("Spell 4071:", return_full_text=False)[0]["generated_text"].strip()
    assert STYLE.match(answer), answer
    assert answer == "four, zero, seven, one", answer
    sft = pipeline("text-generation", model=str(workdir / "results/runs/demo/export"))
    assert sft("Spell 4071:", return_full_text=False)[0]["generated_text"].strip() == "four zero seven one"
