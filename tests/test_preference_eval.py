"""Evaluation of preference runs (scripts/evaluation/preference_eval.py): the log-probs of the chosen
and rejected responses under the base and the tuned model, the tuned model's implicit DPO rewards,
and where a user reads them (report.json, summary.md, the compare table, the model card); the
regex_match metric and the demo's style pairs (scripts/make_demo_data.py --pairs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from scripts import compare_runs, make_demo_data, model_card, plot_metrics
from scripts.common.metrics import compute_metrics, regex_match, regex_match_per_example
from scripts.compiler.spec import SpecError, check_slice, schema_errors
from scripts.evaluation import preference_eval as P
from scripts.evaluation.evaluation import build_report, summary_markdown

REPO = Path(__file__).resolve().parents[1]


# --- pure functions ------------------------------------------------------------------------


def test_response_examples_score_only_the_response_after_the_shared_prompt():
    rows = [{"input_ids": [1, 5, 6, 7, 2], "prompt_length": 2, "rejected_ids": [8, 2]}]
    (chosen,), (rejected,) = P.response_examples(rows)
    assert chosen == ([1, 5, 6, 7, 2], [-100, -100, 6, 7, 2])
    assert rejected == ([1, 5, 8, 2], [-100, -100, 8, 2])
    assert P.summed_logps([(3.5, 3), (0.25, 2)]) == [-3.5, -0.25]


def test_ranking_and_reward_accuracy_by_hand():
    # base: ranks pair 0 right, pair 1 wrong, pair 2 tied (wrong)
    base = ([-4.0, -6.0, -5.0], [-5.0, -5.0, -5.0])
    tuned = ([-3.0, -5.0, -5.0], [-7.0, -5.5, -4.0])
    assert P.logp_metrics(*base) == {
        "chosen_logp": -5.0,
        "rejected_logp": -5.0,
        "ranking_accuracy": pytest.approx(1 / 3),
    }
    rewards = P.reward_metrics(tuned, base, beta=0.5)
    # reward margins: 0.5*((1) - (-2)) = 1.5, 0.5*((1) - (-0.5)) = 0.75, 0.5*(0 - 1) = -0.5
    assert rewards == {"reward_accuracy": pytest.approx(2 / 3), "reward_margin": pytest.approx(1.75 / 3)}
    # beta scales the margin, not the accuracy; the reference against itself has no preference
    assert P.reward_metrics(tuned, base, beta=1.0)["reward_margin"] == pytest.approx(3.5 / 3)
    assert P.reward_metrics(base, base, beta=0.1) == {"reward_accuracy": 0.0, "reward_margin": 0.0}
    metrics = P.preference_metrics({"base": base, "tuned": tuned}, beta=0.5)
    assert set(metrics["base"]) == {"chosen_logp", "rejected_logp", "ranking_accuracy"}
    assert metrics["tuned"]["reward_accuracy"] == pytest.approx(2 / 3)
    assert P.preference_metrics({"tuned": tuned}, beta=0.5)["tuned"].keys() == metrics["base"].keys()
    scores = P.pair_scores({"base": base, "tuned": tuned}, beta=0.5)
    assert scores["base"][0] == {"logp_margin": 1.0}
    assert scores["tuned"][1] == {"logp_margin": 0.5, "reward_margin": 0.75}
    with pytest.raises(ValueError, match="as many chosen as rejected"):
        P.logp_metrics([-1.0], [])


def test_beta_comes_from_the_objectives_block_of_the_train_slice():
    assert P.pair_beta({"objective": "dpo", "dpo": {"beta": 0.25}}) == 0.25
    assert P.pair_beta({"objective": "sft", "dpo": {"beta": 0.25}}) is None
    assert P.pair_beta({}) is None
    assert not P.has_pairs([{"rejected_ids": None}]) and P.has_pairs([{"rejected_ids": [2]}])


# --- regex_match ---------------------------------------------------------------------------


def test_regex_match_is_the_share_of_generations_in_a_form():
    outputs = ["three, seven, two", "three seven two", "six, six", "Six, six"]
    pattern = make_demo_data.PREFERRED_PATTERN
    assert regex_match_per_example(outputs, pattern=pattern) == [1.0, 0.0, 1.0, 0.0]
    assert regex_match(outputs, pattern=pattern) == 0.5
    refs = ["x"] * 4  # references are not read
    assert compute_metrics(["regex_match"], outputs, refs, {"regex_match": {"pattern": "seven"}}) == {
        "regex_match": 0.5
    }


def test_regex_match_needs_its_pattern_in_the_spec():
    with pytest.raises(SpecError, match="'regex_match' is a required property"):
        check_slice("evaluate", {"metrics": ["regex_match"]})
    with pytest.raises(SpecError, match="evaluate.regex_match: 'pattern' is a required property"):
        check_slice("evaluate", {"metrics": ["regex_match"], "regex_match": {}})
    ev = check_slice("evaluate", {"metrics": ["regex_match"], "regex_match": {"pattern": "^a"}})
    assert ev["regex_match"] == {"pattern": "^a"}
    assert "regex_match" not in check_slice("evaluate", {})  # other specs' slices are unchanged


# --- the demo's style pairs ----------------------------------------------------------------


def test_demo_data_files_are_what_the_script_writes(tmp_path):
    plain, pairs = tmp_path / "plain.jsonl", tmp_path / "pairs.jsonl"
    make_demo_data.main(["--out", str(plain)])
    make_demo_data.main(["--pairs", "--out", str(pairs)])
    assert plain.read_bytes() == (REPO / "data/demo/spell_digits.jsonl").read_bytes()
    assert pairs.read_bytes() == (REPO / "data/demo/spell_digits_pairs.jsonl").read_bytes()


def test_demo_pairs_prefer_the_comma_style_on_the_sft_prompts():
    pairs = [
        json.loads(line) for line in (REPO / "data/demo/spell_digits_pairs.jsonl").read_text().splitlines()
    ]
    plain = [json.loads(line) for line in (REPO / "data/demo/spell_digits.jsonl").read_text().splitlines()]
    sft = {r["prompt"]: r["completion"] for r in plain[:2400]}
    style = re.compile(make_demo_data.PREFERRED_PATTERN)
    assert len(pairs) > 2300 and len({p["prompt"] for p in pairs}) == len(pairs)
    for pair in pairs:
        assert pair["rejected"] == sft[pair["prompt"]]  # the SFT demo's answer
        assert pair["chosen"] == pair["rejected"].replace(" ", ", ")
        assert style.search(pair["chosen"]) and not style.search(pair["rejected"])
    assert {
        "prompt": "Spell 6311:",
        "chosen": "six, three, one, one",
        "rejected": "six three one one",
    } in pairs


# --- where users read the figures ----------------------------------------------------------

BASE = {"exact_match": 0.0, "chosen_logp": -30.0, "rejected_logp": -31.0, "ranking_accuracy": 0.49}
TUNED = {
    "exact_match": 0.5,
    "chosen_logp": -29.0,
    "rejected_logp": -40.0,
    "ranking_accuracy": 0.9,
    "reward_accuracy": 0.95,
    "reward_margin": 1.0,
}
PREFERENCE = {"objective": "dpo", "pairs": 20, "beta": 0.1}


def preference_report(run="dpo") -> dict:
    return build_report(run, 20, 20, dict(BASE), dict(TUNED), [], PREFERENCE)


def test_report_holds_both_models_log_probs_and_the_tuned_rewards():
    report = preference_report()
    assert schema_errors(report, "report.schema.json") == []
    assert report["improved"] == {
        "exact_match": True,
        "chosen_logp": True,
        "rejected_logp": True,
        "ranking_accuracy": True,
    }
    assert report["higher_is_better"]["rejected_logp"] is False and report["preference"] == PREFERENCE
    summary = summary_markdown(report, [])
    assert "| reward_accuracy | ↑ higher | - | 0.95 | - | - |" in summary
    assert "| ranking_accuracy | ↑ higher | 0.49 | 0.9 | +0.41 | yes |" in summary
    assert "## Preference pairs (20 validation pairs, dpo, beta 0.1 (train.dpo.beta))" in summary
    bad = {**report, "metrics": {"base": BASE, "tuned": {**TUNED, "reward_accuracy": 1.5}}}
    assert schema_errors(bad, "report.schema.json")


def test_compare_table_row_and_plot_of_a_preference_run(tmp_path):
    reports = [
        preference_report("dpo"),
        build_report("sft", 20, 20, {"exact_match": 0.0}, {"exact_match": 0.8}, []),
    ]
    paths = []
    for report in reports:
        paths.append(tmp_path / f"{report['run']}.json")
        paths[-1].write_text(json.dumps(report))
    out = {kind: tmp_path / f"metrics.{kind}" for kind in ("md", "html", "png", "json")}
    args = ["--reports", *map(str, paths), "--markdown", str(out["md"]), "--html", str(out["html"])]
    compare_runs.main([*args, "--png", str(out["png"]), "--json", str(out["json"])])
    text = out["md"].read_text()
    lines = text.splitlines()
    assert (
        "| run | exact_match ↑ | chosen_logp ↑ | rejected_logp ↓ | ranking_accuracy ↑ | reward_accuracy ↑ "
        "| reward_margin ↑ |" in lines
    )
    assert "| dpo | 0.5 (+0.5) | **-29 (+1)** | **-40 (-9)** | **0.9 (+0.41)** | **0.95** | **1** |" in lines
    assert "| sft | **0.8 (+0.8)** | - | - | - | - | - |" in lines
    assert "reward_accuracy and reward_margin the tuned model's implicit DPO rewards" in text
    panels = plot_metrics.panels(reports[0])
    assert {p["title"].split()[0]: [b for b, _ in p["bars"]] for p in panels}["reward_accuracy"] == ["tuned"]
    plot_metrics.main(["--report", str(paths[0]), "--out", str(tmp_path / "plot.png")])


def test_model_card_shows_the_objective_and_the_preference_metrics():
    report = {**preference_report(), "examples": 20}
    train = {
        "spec": {
            "objective": "dpo",
            "dpo": {"beta": 0.1},
            "learning_rate": 0.001,
            "per_device_batch_size": 8,
        },
        "counts": {
            "steps": 5,
            "examples": 40,
            "train_tokens": 400,
            "trainable_parameters": 10,
            "total_parameters": 100,
        },
        "details": {"method": "full", "precision": "fp32", "first_loss": 0.69, "final_loss": 0.2},
        "inputs": [],
        "provenance": {"packages": {}, "device": "cpu", "python": "3.11", "git_commit": None},
    }
    spec = {
        "data": {"sources": [{"path": "data/demo/spell_digits_pairs.jsonl"}]},
        "evaluate": {"metrics": ["exact_match"]},
    }
    card = {"license": "mit", "language": ["en"], "tags": [], "summary": "", "datasets": []}
    base = {"details": {"source": "build", "weights": "."}}
    data = {"inputs": []}
    text = model_card.render_card({"card": card, "format": "merged"}, "dpo", spec, report, train, base, data)
    meta = yaml.safe_load(text.split("---\n")[1])
    assert "dpo" in meta["tags"] and "sft" not in meta["tags"]
    assert "| reward_accuracy | - | 0.95 |" in text and "| ranking_accuracy | 0.49 | 0.9 |" in text
    assert "- objective: dpo, beta 0.1" in text
    assert "reward_accuracy: share of pairs where the tuned model's implicit DPO reward" in text


# --- the evaluate CLI on pair tokens (the tiny built model, tests/evaluate_fixtures.py; tuned = base, no training) ----------


@pytest.fixture(scope="module")
def pair_tokens(tiny_build, tmp_path_factory):
    """Pair tokens shaped as tokenize_shard writes them: prompt+chosen, the prompt's length and
    the rejected response's ids (EOS included)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.common.modeling import load_tokenizer

    tok = load_tokenizer(tiny_build / "base")
    rows = []
    for i in range(10, 22):
        words = [make_demo_data.WORDS[int(d)] for d in str(i)]
        prompt = tok(f"Spell {i}:")["input_ids"]
        chosen = tok(" " + ", ".join(words), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rejected = tok(" " + " ".join(words), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(
            {
                "id": f"{i:04d}",
                "split": "validation",
                "input_ids": prompt + chosen,
                "labels": [-100] * len(prompt) + chosen,
                "prompt_length": len(prompt),
                "prompt": f"Spell {i}:",
                "reference": ", ".join(words),
                "rejected_ids": rejected,
            }
        )
    path = tmp_path_factory.mktemp("pairs") / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, rows


def evaluate_pairs(tiny_build, tokens, out, ev: dict, train_spec: dict) -> dict:
    from scripts import evaluate_model

    manifest = out.parent / f"{out.name}.train.manifest.json"
    manifest.write_text(json.dumps({"spec": train_spec}))
    base = str(tiny_build / "base")
    evaluate_model.main(
        [
            *("--spec-json", json.dumps(ev), "--method", "full", "--base", base, "--tuned", base),
            *("--train-manifest", str(manifest), "--tokens", str(tokens), "--out-dir", str(out)),
            *("--manifest", f"{out}.manifest.json", "--run", "pairs", "--threads", "1"),
        ]
    )
    return json.loads((out / "report.json").read_text())


def direct_logp(model, ids: list[int], start: int) -> float:
    """log p(ids[start:] | ids[:start]) from one forward pass, without label_losses."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    return float(sum(logprobs[t - 1, ids[t]] for t in range(start, len(ids))))


def test_cli_scores_pairs_against_the_reference(tiny_build, pair_tokens, tmp_path):
    from transformers import AutoModelForCausalLM

    tokens, rows = pair_tokens
    ev = {
        "metrics": ["exact_match", "regex_match", "loss"],
        "regex_match": {"pattern": "^[a-z]+(, [a-z]+)+$"},
    }
    dpo = {"objective": "dpo", "dpo": {"beta": 0.1}}
    report = evaluate_pairs(
        tiny_build, tokens, tmp_path / "dpo", {**ev, "max_new_tokens": 4, "batch_size": 8}, dpo
    )
    assert schema_errors(report, "report.schema.json") == []
    assert report["preference"] == {"objective": "dpo", "pairs": 12, "beta": 0.1}
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    # tuned = base: the same log-probs, and the reference has no preference over itself
    for name in ("chosen_logp", "rejected_logp", "ranking_accuracy"):
        assert base[name] == tuned[name]
    assert (tuned["reward_accuracy"], tuned["reward_margin"]) == (0.0, 0.0)
    assert "reward_accuracy" not in base and "reward_accuracy" not in report["improved"]
    model = AutoModelForCausalLM.from_pretrained(tiny_build / "base").eval()
    n = [r["prompt_length"] for r in rows]
    chosen = [direct_logp(model, r["input_ids"], k) for r, k in zip(rows, n)]
    rejected = [direct_logp(model, r["input_ids"][:k] + r["rejected_ids"], k) for r, k in zip(rows, n)]
    assert tuned["chosen_logp"] == pytest.approx(sum(chosen) / 12, abs=1e-4)
    assert tuned["rejected_logp"] == pytest.approx(sum(rejected) / 12, abs=1e-4)
    right = sum(c > r for c, r in zip(chosen, rejected)) / 12
    assert tuned["ranking_accuracy"] == pytest.approx(right)
    predictions = [json.loads(line) for line in (tmp_path / "dpo/predictions.jsonl").read_text().splitlines()]
    assert {p["reference"] for p in predictions} >= {"one, zero", "two, one"}  # the chosen responses
    assert all(p["scores"]["tuned"]["reward_margin"] == 0.0 for p in predictions)
    assert (
        "## Preference pairs (12 validation pairs, dpo, beta 0.1" in (tmp_path / "dpo/summary.md").read_text()
    )

    # without compare_base the base is still the rewards' reference, but the report shows no base
    alone = evaluate_pairs(
        tiny_build, tokens, tmp_path / "alone", {"metrics": ["loss"], "compare_base": False}, dpo
    )
    assert alone["metrics"]["base"] is None and alone["improved"] is None
    assert alone["metrics"]["tuned"]["reward_accuracy"] == 0.0
    assert alone["metrics"]["tuned"]["chosen_logp"] == tuned["chosen_logp"]
    # an SFT run on the same tokens gets no preference metrics
    sft = evaluate_pairs(tiny_build, tokens, tmp_path / "sft", {"metrics": ["loss"]}, {"objective": "sft"})
    assert "preference" not in sft and "chosen_logp" not in sft["metrics"]["tuned"]


# --- (slow) a DPO run through `snakemake`: report.json, the compare table, the model card ------


@pytest.fixture(scope="module")
def dpo_run(dpo_demo_build, tmp_path_factory):
    """The DPO demo run (examples/dpo_style.yaml: DPO with beta 0.1 on the demo's style pairs,
    from the demo's SFT run; the session's shared build, copied), then `snakemake compare`."""
    from tests.workflow_fixtures import copy_built, snakemake

    workdir = copy_built(dpo_demo_build, tmp_path_factory.mktemp("dpo_eval") / "wf")
    specs = "specs=specs/demo.yaml,examples/dpo_style.yaml"
    snakemake(workdir, "compare", "results/runs/dpo_style/model_card.md", "--config", specs)
    return workdir


@pytest.mark.slow
def test_a_dpo_run_reports_rewards_in_the_report_the_compare_table_and_the_card(dpo_run):
    report = json.loads((dpo_run / "results/runs/dpo_style/evaluate/report.json").read_text())
    pairs = report["examples"]  # every validation record of the pair data is a pair
    assert pairs > 20
    assert report["preference"] == {"objective": "dpo", "pairs": pairs, "beta": 0.1}
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    assert tuned["reward_accuracy"] >= 0.8 and tuned["reward_margin"] > 0, tuned
    # the mean reward margin is beta times how much the log-prob gap chosen - rejected grew
    grew = (tuned["chosen_logp"] - tuned["rejected_logp"]) - (base["chosen_logp"] - base["rejected_logp"])
    assert tuned["reward_margin"] == pytest.approx(0.1 * grew, abs=1e-4)
    assert 0 <= base["ranking_accuracy"] <= tuned["ranking_accuracy"], (base, tuned)
    assert set(base) == {"exact_match", "regex_match", "validation_loss", *P.LOGP_METRICS}
    table = (dpo_run / "results/compare/metrics.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith("| dpo_style |")]
    assert f"**{tuned['reward_accuracy']:.4g}**" in row.split(" | ")[-2]  # reward_accuracy, no base
    assert "ranking_accuracy ↑ | reward_accuracy ↑ | reward_margin ↑ |" in table
    card = (dpo_run / "results/runs/dpo_style/model_card.md").read_text()
    assert f"| reward_accuracy | - | {tuned['reward_accuracy']:.4g} |" in card
    assert "- objective: dpo, beta 0.1" in card and f"## Preference pairs ({pairs} validation pairs" in card
    page = (dpo_run / "results/runs/dpo_style/report/evaluation.html").read_text()
    assert "reward_accuracy" in page and "ranking_accuracy" in page


def test_cli_refuses_a_regex_match_pattern_that_does_not_compile(tiny_build, pair_tokens, tmp_path, capsys):
    ev = {"metrics": ["regex_match"], "regex_match": {"pattern": "([a-z]+"}}
    with pytest.raises(SystemExit):
        evaluate_pairs(tiny_build, pair_tokens[0], tmp_path / "bad", ev, {"objective": "sft"})
    assert "evaluate.regex_match.pattern: '([a-z]+' is not a valid regex" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "report.json").exists()
