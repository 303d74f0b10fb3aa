"""The SFT -> DPO demo pair (issue 15), as `make demo-dpo` runs it: the demo's SFT run, then
examples/dpo_style.yaml on top of it (model.from_run: demo), trained on preference pairs only
(chosen "three, seven, two", rejected "three seven two"). What a user checks: the report says the
style changed (share of comma answers, reward accuracy), and the exported model, loaded with a
plain transformers `pipeline()`, answers in the new style. The demo's SFT run is the session's
demo build, and the target runs on a copy of it (tests/workflow_fixtures.py: dpo_demo_build,
shared with tests/test_preference_eval.py; read here, never changed)."""

from __future__ import annotations

import json
import re

import pytest

from tests.workflow_fixtures import build_jobs, make_target_args

pytestmark = pytest.mark.slow
STYLE = re.compile(r"^[a-z]+(, [a-z]+)+$")


def test_the_make_target_runs_the_demo_then_dpo_style():
    assert make_target_args("demo-dpo") == [
        "export",
        "--config",
        "specs=specs/demo.yaml,examples/dpo_style.yaml",
    ]


def test_dpo_moves_the_demo_to_the_preferred_style(dpo_demo_build):
    workdir, ran = dpo_demo_build, build_jobs(dpo_demo_build)
    # the demo came built and up to date: only the DPO run trains, on top of its merged model
    assert ran["train_model"] == 1 and ran["reference_logps"] == 1, ran
    report = json.loads((workdir / "results/runs/dpo_style/evaluate/report.json").read_text())
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    assert base["regex_match"] < 0.2 <= 0.8 <= tuned["regex_match"], (base, tuned)
    assert tuned["reward_accuracy"] >= 0.9 and tuned["reward_margin"] > 0, tuned
    assert tuned["exact_match"] >= 0.8, tuned  # the right digits, in the new style
    assert tuned["ranking_accuracy"] > base["ranking_accuracy"], (base, tuned)
    card = (workdir / "results/runs/dpo_style/model_card.md").read_text()
    assert "reward_accuracy" in card or "reward accuracy" in card.lower()


def test_the_exported_model_answers_in_the_new_style_in_a_plain_pipeline(dpo_demo_build):
    from transformers import pipeline

    workdir = dpo_demo_build
    generate = pipeline("text-generation", model=str(workdir / "results/runs/dpo_style/export"))
    answer = generate("Spell 4071:", return_full_text=False)[0]["generated_text"].strip()
    assert STYLE.match(answer), answer
    assert answer == "four, zero, seven, one", answer
    sft = pipeline("text-generation", model=str(workdir / "results/runs/demo/export"))
    assert sft("Spell 4071:", return_full_text=False)[0]["generated_text"].strip() == "four zero seven one"
