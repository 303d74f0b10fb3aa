"""Evaluation: the spec section, metrics as the report names them (checked against rouge_score
and sacrebleu), worst-first predictions, the report schema, batched generation and loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from scripts.compiler.spec import SpecError, check_slice, schema_errors
from scripts.evaluation import evaluation as E
from tests.evaluate_fixtures import run_cli

PREDS = ["the cat sat on the mat", "#### 42", "two four", "a b c"]
REFS = ["the cat is on the mat", "so the answer is #### 42", "two four", "x y z"]


def spec(**overrides) -> dict:
    return check_slice("evaluate", overrides)


# --- the spec section --------------------------------------------------------------------


def test_defaults_fill_every_option():
    ev = spec()
    assert ev["do_sample"] is False and ev["stop_at_eos"] is True and ev["seed"] == 0
    assert ev["rouge"]["rouge_types"] == ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    assert ev["accuracy"] == {"labels": None, "extract_regex": None}
    assert ev["bleu"]["tokenize"] == "13a" and ev["chrf"]["char_order"] == 6


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"temperature": 0.7},
            "evaluate.temperature: only applies when sampling; set evaluate.do_sample: true",
        ),
        ({"top_k": 5}, "evaluate.top_k: only applies when sampling"),
        (
            {"accuracy": {"extract_regex": "#### ("}},
            "evaluate.accuracy.extract_regex: '#### (' is not a valid regex",
        ),
        ({"metrics": ["rogue"]}, "did you mean 'rouge'?"),
        ({"rouge": {"rouge_types": ["rougeX"]}}, "'rougeX' is not one of"),
        ({"exact_match": {"ignore_cse": True}}, "did you mean 'ignore_case'?"),
    ],
)
def test_spec_errors_name_the_key_and_the_fix(value, message):
    with pytest.raises(SpecError, match=None) as caught:
        spec(**value)
    assert message in str(caught.value)


def test_sampling_settings_are_accepted_with_do_sample():
    ev = spec(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, seed=3)
    assert (ev["temperature"], ev["top_p"], ev["top_k"], ev["seed"]) == (0.7, 0.9, 20, 3)


# --- metrics as reported -----------------------------------------------------------------


def test_text_metrics_match_the_libraries():
    ev = spec(metrics=["exact_match", "rouge", "bleu", "chrf"], rouge={"rouge_types": ["rouge1", "rougeL"]})
    got = E.text_metrics(ev, PREDS, REFS)
    assert set(got) == {"exact_match", "rouge1", "rougeL", "bleu", "chrf"}
    assert got["exact_match"] == 0.25
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    exact_pair = scorer.score(REFS[2], PREDS[2])["rouge1"].fmeasure
    assert exact_pair == 1.0 and 0 < got["rouge1"] < 1


def test_per_example_chrf_matches_sacrebleu_sentence_chrf():
    from scripts.common.metrics import chrf_per_example

    got = chrf_per_example(PREDS, REFS, word_order=2)
    assert got == [
        pytest.approx(sacrebleu.sentence_chrf(p, [r], word_order=2).score) for p, r in zip(PREDS, REFS)
    ]
    assert got[2] == pytest.approx(100.0)


def test_accuracy_with_the_gsm8k_regex_and_with_labels():
    ev = spec(metrics=["accuracy"], accuracy={"extract_regex": r"#### (\-?[0-9\.,]+)"})
    assert E.text_metrics(ev, ["#### 1,000", "#### 7", "no answer"], ["#### 1000", "#### 8", "#### 3"]) == {
        "accuracy": pytest.approx(1 / 3)
    }
    ev = spec(metrics=["accuracy"], accuracy={"labels": ["yes", "no"]})
    # "maybe" equals its reference but is not a label; "no" is a label but wrong
    assert E.text_metrics(ev, ["Yes", "maybe", "no"], ["yes", "maybe", "yes"])["accuracy"] == pytest.approx(
        1 / 3
    )


def test_loss_metrics_and_directions():
    assert E.loss_metrics(spec(metrics=["loss"]), 2.0) == {"validation_loss": 2.0}
    both = E.loss_metrics(spec(metrics=["perplexity"]), 2.0)
    assert both["perplexity"] == pytest.approx(7.389056, rel=1e-6)
    report = E.build_report(
        "r",
        4,
        4,
        {"exact_match": 0.1, "validation_loss": 3.0},
        {"exact_match": 0.5, "validation_loss": 2.0},
        [],
    )
    assert report["higher_is_better"] == {"exact_match": True, "validation_loss": False}
    assert report["improved"] == {"exact_match": True, "validation_loss": True}
    worse = E.build_report("r", 4, 4, {"validation_loss": 1.0}, {"validation_loss": 2.0}, [])
    assert worse["improved"] == {"validation_loss": False}


# --- predictions and the report ----------------------------------------------------------


def rows_and_results():
    rows = [
        {"id": "a", "prompt": "Spell 1:", "reference": "one"},
        {"id": "b", "prompt": "Spell 2:", "reference": "two"},
        {"id": "c", "prompt": "", "reference": "plain text"},
        {"id": "d", "prompt": "Spell 3:", "reference": "three"},
    ]
    results = {
        "tuned": {
            "outputs": {0: "one", 1: "too", 3: "three four"},
            "losses": [(1.0, 2), (4.0, 2), (9.0, 3), (2.0, 2)],
        },
        "base": {"outputs": {0: "x", 1: "y", 3: "z"}, "losses": [(5.0, 2), (5.0, 2), (9.0, 3), (5.0, 2)]},
    }
    return rows, results


def test_predictions_worst_first_and_plain_text_scored_by_loss_only():
    rows, results = rows_and_results()
    preds = E.prediction_rows(spec(metrics=["exact_match", "rouge", "perplexity"]), rows, results)
    assert [p["id"] for p in preds] == ["b", "d", "a", "c"]  # exact 0 (higher loss first), exact 1, no prompt
    b = preds[0]
    assert (b["base"], b["tuned"], b["reference"]) == ("y", "too", "two")
    assert b["scores"]["tuned"] == {"exact_match": 0.0, "rougeL": 0.0, "loss": 2.0}
    assert preds[1]["scores"]["tuned"]["rougeL"] == pytest.approx(2 / 3, abs=1e-6)
    assert preds[3]["tuned"] is None and preds[3]["scores"]["tuned"] == {"loss": 3.0}


def test_report_validates_and_rejects_unknown_metrics():
    rows, results = rows_and_results()
    preds = E.prediction_rows(spec(), rows, results)
    report = E.build_report(
        "demo", 4, 3, {"exact_match": 0.0, "bleu": 0.0}, {"exact_match": 0.5, "bleu": 20.0}, preds
    )
    assert len(report["worst"]) == 4
    assert not schema_errors(report, "report.schema.json")
    assert not schema_errors(
        {**report, "metrics": {"base": None, "tuned": {"bleu": 1.0}}, "improved": None}, "report.schema.json"
    )
    bad = json.loads(json.dumps(report))
    bad["metrics"]["tuned"]["blue"] = 1.0
    assert schema_errors(bad, "report.schema.json")
    bad = {**report, "metrics": {"base": None, "tuned": {"exact_match": 1.5}}}
    assert schema_errors(bad, "report.schema.json")


def test_summary_markdown_has_the_table_and_escapes_cells():
    rows, results = rows_and_results()
    rows[1]["prompt"] = "a | b\nc"
    preds = E.prediction_rows(spec(metrics=["exact_match", "loss"]), rows, results)
    report = E.build_report(
        "demo",
        4,
        3,
        {"exact_match": 0.0, "validation_loss": 2.5},
        {"exact_match": 0.25, "validation_loss": 2.0},
        preds,
    )
    text = E.summary_markdown(report, preds)
    assert "| exact_match | ↑ higher | 0 | 0.25 | +0.25 | yes |" in text
    assert "| validation_loss | ↓ lower | 2.5 | 2 | -0.5 | yes |" in text
    assert "a \\| b c" in text


# --- generation and loss on a tiny random model ------------------------------------------


class FakeTokenizer:
    pad_token_id, eos_token_id = 0, 2

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(str(t) for t in row if t not in (0, 2)) for row in rows]


@pytest.fixture(scope="module")
def tiny_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


PROMPTS = [
    [1, 5, 6, 7, 8, 9],
    [1, 10],
    [1, 11, 12, 13],
    [1, 14, 15],
    [1, 20, 21, 22, 23, 24, 25, 26],
    [1, 30],
]


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model):
    from scripts.evaluation.generation import Decoding, generate_ids

    one = generate_ids(
        tiny_model, FakeTokenizer(), PROMPTS, Decoding(max_new_tokens=6, batch_size=1, stop_at_eos=False)
    )
    batched = generate_ids(
        tiny_model, FakeTokenizer(), PROMPTS, Decoding(max_new_tokens=6, batch_size=4, stop_at_eos=False)
    )
    assert batched == one
    assert all(len(row) == 6 for row in one)  # no EOS stop: always max_new_tokens


def test_sampling_is_seeded(tiny_model):
    from scripts.evaluation.generation import Decoding, generate_ids

    sample = Decoding(
        max_new_tokens=8, batch_size=3, do_sample=True, temperature=1.5, stop_at_eos=False, seed=7
    )
    first = generate_ids(tiny_model, FakeTokenizer(), PROMPTS, sample)
    assert generate_ids(tiny_model, FakeTokenizer(), PROMPTS, sample) == first
    other = generate_ids(tiny_model, FakeTokenizer(), PROMPTS, Decoding(**{**sample.__dict__, "seed": 8}))
    assert other != first


def test_stop_at_eos_cuts_at_the_first_eos():
    from scripts.evaluation.generation import cut_at_eos, length_batches

    assert cut_at_eos([5, 6, 2, 7, 2], [2]) == [5, 6]
    assert cut_at_eos([5, 6], [2, 3]) == [5, 6]
    assert length_batches([3, 5, 1, 5], 2) == [[1, 3], [0, 2]]


def test_label_losses_match_the_model_loss(tiny_model):
    import torch

    from scripts.evaluation.generation import label_losses, mean_loss

    examples = [(p + [3, 4, 2], [-100] * len(p) + [3, 4, 2]) for p in PROMPTS]
    losses = label_losses(tiny_model, examples, batch_size=4, pad_id=0)
    for (ids, labels), (total, count) in zip(examples, losses):
        with torch.no_grad():
            expected = tiny_model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        assert count == 3 and total / count == pytest.approx(expected, rel=1e-5)
    assert mean_loss(losses) == pytest.approx(sum(t for t, _ in losses) / 18)


# --- the CLI on the tiny built model (tests/evaluate_fixtures.py: tiny_build) ---------------------------------------------------


def test_cli_writes_report_predictions_summary_and_manifest(tiny_build, tmp_path):
    from scripts.common.manifest import validate_manifest

    ev = {
        "metrics": ["exact_match", "rouge", "bleu", "chrf", "perplexity"],
        "max_new_tokens": 6,
        "batch_size": 4,
    }
    report = run_cli(tiny_build, tmp_path, ev)
    assert not schema_errors(report, "report.schema.json")
    assert (report["examples"], report["generated"]) == (11, 10)  # the plain-text record: loss only
    assert report["metrics"]["base"] == report["metrics"]["tuned"]  # same weights, same numbers
    assert not any(report["improved"].values())
    assert set(report["metrics"]["tuned"]) == {
        "exact_match",
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "bleu",
        "chrf",
        "validation_loss",
        "perplexity",
    }
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 11 and predictions[-1]["id"] == "9999" and predictions[-1]["tuned"] is None
    assert all(p["base"] == p["tuned"] for p in predictions)
    assert report["worst"] == predictions[:5]
    assert "| validation_loss | ↓ lower |" in (tmp_path / "summary.md").read_text()
    manifest = json.loads(Path(f"{tmp_path}.manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["counts"] == {"examples": 11, "generated": 10}


def test_cli_loss_only_skips_generation_and_scores_the_same_loss(tiny_build, tmp_path):
    only_loss = run_cli(
        tiny_build, tmp_path / "loss", {"metrics": ["loss"], "compare_base": False, "max_examples": 3}
    )
    assert only_loss["metrics"]["base"] is None
    assert set(only_loss["metrics"]["tuned"]) == {"validation_loss"}
    assert (only_loss["generated"], only_loss["improved"]) == (0, None)
    # the same examples scored with generation too: generating must not change the loss
    both = run_cli(
        tiny_build,
        tmp_path / "both",
        {"metrics": ["exact_match", "loss"], "compare_base": False, "max_examples": 3},
    )
    assert both["generated"] == 3
    loss = only_loss["metrics"]["tuned"]["validation_loss"]
    assert math.isfinite(loss) and loss > 0
    assert loss == pytest.approx(both["metrics"]["tuned"]["validation_loss"], rel=1e-6)


def test_cli_plain_text_only_needs_loss_metrics(tiny_build, tmp_path, capsys):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(tiny_build / "tokens.parquet")
    plain = table.filter(pc.equal(table["prompt_length"], 0))
    assert plain.num_rows >= 1
    pq.write_table(plain, tmp_path / "plain.parquet")
    with pytest.raises(SystemExit):
        run_cli(tiny_build, tmp_path / "bad", {"metrics": ["exact_match"]}, tokens=tmp_path / "plain.parquet")
    assert "no validation record has a prompt (plain-text data)" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "report.json").exists()


def test_kto_records_are_scored_on_their_desirable_completions_only():
    """An undesirable KTO completion is what the model should not say: no reference to score."""
    from scripts.evaluate_model import select_rows

    ev = check_slice("evaluate", {"metrics": ["exact_match"]})
    rows = [
        {"id": "a", "prompt_length": 3, "label": True},
        {"id": "b", "prompt_length": 3, "label": False},
        {"id": "c", "prompt_length": 3},
    ]
    kept, generated = select_rows(rows, ev)
    assert [r["id"] for r in kept] == ["a", "c"] and generated == [0, 1]
