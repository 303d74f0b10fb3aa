"""Tests for scripts/common/metrics.py against the reference libraries and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer, scoring

from scripts.common import metrics

PREDS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over dogs",
    "the dog ran home.\nthe cat sat down.",
    "nothing in common",
]
REFS = [
    "the cat is sitting on the mat",
    "the quick brown fox jumped over the lazy dog",
    "the cat sat down.\nthen the dog ran home.",
    "completely different words",
]
GSM8K = r"#### (\-?[0-9\.,]+)"


# --- exact_match -----------------------------------------------------------------

# The documented examples (and one more) of HF evaluate's exact_match metric, with its printed results.
EM_REFS = ["the cat", "theater", "YELLING", "agent007"]
EM_PREDS = ["cat?", "theater", "yelling", "agent"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 0.25),
        # Regexes run before lower-casing: "yell" does not touch "YELLING".
        ({"regexes_to_ignore": ["the ", "yell"], "ignore_case": True}, 0.25),
        (
            {
                "regexes_to_ignore": ["the ", "yell"],
                "ignore_case": True,
                "ignore_punctuation": True,
            },
            0.5,
        ),
        (
            {
                "regexes_to_ignore": ["the ", "yell", "YELL"],
                "ignore_case": True,
                "ignore_punctuation": True,
            },
            0.75,
        ),
        (
            {
                "regexes_to_ignore": ["the ", "yell", "YELL"],
                "ignore_case": True,
                "ignore_punctuation": True,
                "ignore_numbers": True,
            },
            1.0,
        ),
    ],
)
def test_exact_match_matches_evaluate_documented_examples(options, expected):
    assert metrics.exact_match(EM_PREDS, EM_REFS, **options) == pytest.approx(expected)


def test_exact_match_options_one_at_a_time():
    preds = [" Paris\n", "paris", "Paris!", "«Paris»", "café."]
    refs = ["Paris", "Paris", "Paris", "Paris", "café"]
    per = metrics.exact_match_per_example
    assert per(preds, refs) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert per(preds, refs, strip=False) == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert per(preds, refs, ignore_case=True) == [1.0, 1.0, 0.0, 0.0, 0.0]
    # string.punctuation is ASCII only: guillemets survive, as in evaluate.
    assert per(preds, refs, ignore_punctuation=True) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert metrics.exact_match(preds, refs, ignore_case=True) == pytest.approx(0.4)
    # evaluate lower-cases (str.lower), it does not case-fold: "ß" stays "ß".
    assert per(["Straße", "ÉTÉ"], ["STRASSE", "été"], ignore_case=True) == [0.0, 1.0]


def test_exact_match_strip_also_applies_after_punctuation_removal():
    assert metrics.exact_match(["Paris ."], ["Paris"], ignore_punctuation=True) == 1.0
    assert metrics.exact_match(["12 apples"], ["apples"], ignore_numbers=True) == 1.0


def test_exact_match_texts_normalised_to_empty_only_match_if_equal():
    per = metrics.exact_match_per_example
    assert per(["?", "", "!!"], ["!", "", "!!"], ignore_punctuation=True) == [
        0.0,
        1.0,
        1.0,
    ]


# --- accuracy --------------------------------------------------------------------


def test_accuracy_gsm8k_regex():
    preds = [
        "She has 3 + 4 = 7 apples.\n#### 7",
        "Total is 1,000 dollars.\n#### 1,000.",
        "#### -5",
        "The answer is 12",  # no '####': unparseable, wrong
        "#### 8",
        "#### 18.00",
    ]
    refs = [
        "3 + 4 = <<3+4=7>>7\n#### 7",
        "#### 1000",
        "-5",  # a reference without '####' is compared whole
        "#### 12",
        "#### 9",
        "#### 18",
    ]
    per = metrics.accuracy_per_example(preds, refs, extract_regex=GSM8K)
    assert per == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert metrics.accuracy(preds, refs, extract_regex=GSM8K) == pytest.approx(4 / 6)


def test_accuracy_label_set():
    preds = [" Positive", "negative\n", "neutral", "positive.", "NEGATIVE", "negative"]
    refs = ["positive", "negative", "neutral", "positive", "negative", "positive"]
    labels = ["positive", "negative"]
    per = metrics.accuracy_per_example(preds, refs, labels=labels)
    # "neutral" equals its reference but is not a label; "positive." is not a label.
    assert per == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert metrics.accuracy(preds, refs, labels=labels) == pytest.approx(0.5)
    assert metrics.accuracy(preds, refs) == pytest.approx(4 / 6)


def test_accuracy_regex_and_labels_together():
    preds = ["Answer: B", "Answer: E", "I think C"]
    refs = ["B", "E", "C"]
    got = metrics.accuracy_per_example(preds, refs, labels="ABCD", extract_regex=r"Answer: (\w)")
    assert got == [1.0, 0.0, 0.0]


# --- rouge -----------------------------------------------------------------------


def _library_rouge(preds, refs, use_stemmer=False):
    scorer = rouge_scorer.RougeScorer(list(metrics.ROUGE_TYPES), use_stemmer=use_stemmer)
    return [scorer.score(r, p) for p, r in zip(preds, refs)]


def test_rouge_hand_computed():
    # 3 of 3 predicted unigrams match, 3 of 6 reference unigrams: F1 = 2/3.
    got = metrics.rouge(["the cat sat"], ["the cat sat on the mat"])
    assert got["rouge1"] == pytest.approx(2 / 3)
    assert got["rouge2"] == pytest.approx(2 * 1 * 0.4 / 1.4)


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_aggregated_matches_bootstrap_mid(use_stemmer):
    aggregator = scoring.BootstrapAggregator()
    for score in _library_rouge(PREDS, REFS, use_stemmer):
        aggregator.add_scores(score)
    np.random.seed(123)
    expected = {k: v.mid.fmeasure for k, v in aggregator.aggregate().items()}
    got = metrics.rouge(PREDS, REFS, use_stemmer=use_stemmer, seed=123)
    assert list(got) == list(metrics.ROUGE_TYPES)
    assert got == pytest.approx(expected, abs=1e-12)


def test_rouge_without_aggregator_is_mean_f1_and_rougelsum_uses_newlines():
    scores = _library_rouge(PREDS, REFS)
    expected = {k: np.mean([s[k].fmeasure for s in scores]) for k in metrics.ROUGE_TYPES}
    got = metrics.rouge(PREDS, REFS, use_aggregator=False)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got["rougeLsum"] != pytest.approx(got["rougeL"])  # third pair has two lines


def test_rouge_is_reproducible_and_leaves_global_rng_alone():
    np.random.seed(7)
    before = np.random.random()
    np.random.seed(7)
    first = metrics.rouge(PREDS, REFS)
    assert np.random.random() == before
    assert metrics.rouge(PREDS, REFS) == first


def test_rouge_per_example_and_multi_reference():
    scores = _library_rouge(PREDS, REFS)
    got = metrics.rouge_per_example(PREDS, REFS)
    assert got == pytest.approx([s["rougeL"].fmeasure for s in scores])
    multi = metrics.rouge_per_example(["the cat"], [["a dog", "the cat"]])
    assert multi == [pytest.approx(1.0)]


# --- bleu / chrf -----------------------------------------------------------------


def test_bleu_matches_sacrebleu():
    expected = sacrebleu.corpus_bleu(PREDS, [REFS])
    got = metrics.bleu(PREDS, REFS)
    assert got["score"] == pytest.approx(expected.score)
    assert got["precisions"] == pytest.approx(expected.precisions)
    assert got["brevity_penalty"] == pytest.approx(expected.bp)
    assert 0 < got["score"] < 100
    assert got["brevity_penalty"] < 1.0  # predictions are shorter than references


def test_bleu_multi_reference_and_options():
    refs = [[r, p] for p, r in zip(PREDS, REFS)]
    expected = sacrebleu.corpus_bleu(PREDS, [REFS, PREDS])
    assert metrics.bleu(PREDS, refs)["score"] == pytest.approx(expected.score)
    lower = sacrebleu.corpus_bleu(["The Cat"], [["the cat"]], lowercase=True)
    assert metrics.bleu(["The Cat"], ["the cat"], lowercase=True)["score"] == (pytest.approx(lower.score))
    with pytest.raises(ValueError, match="same number of references"):
        metrics.bleu(["a", "b"], [["a"], ["b", "c"]])


def test_chrf_matches_sacrebleu():
    expected = sacrebleu.corpus_chrf(PREDS, [REFS])
    assert metrics.chrf(PREDS, REFS)["score"] == pytest.approx(expected.score)
    plus = sacrebleu.corpus_chrf(PREDS, [REFS], word_order=2)
    got = metrics.chrf(PREDS, REFS, word_order=2)
    assert got["score"] == pytest.approx(plus.score)
    assert got["word_order"] == 2


# --- perplexity, dispatch, errors ------------------------------------------------


def test_perplexity():
    assert metrics.perplexity(2.0) == pytest.approx(7.38905609893065)
    assert metrics.perplexity(0) == 1.0
    assert metrics.perplexity(1e6) == math.inf
    with pytest.raises(ValueError, match="NaN"):
        metrics.perplexity(float("nan"))


def test_compute_metrics_dispatches_with_options():
    got = metrics.compute_metrics(
        ["exact_match", "accuracy", "bleu"],
        ["#### 7", "#### 8"],
        ["#### 7", "#### 9"],
        {"accuracy": {"extract_regex": GSM8K}, "bleu": None},
    )
    assert got["exact_match"] == pytest.approx(0.5)
    assert got["accuracy"] == pytest.approx(0.5)
    expected = sacrebleu.corpus_bleu(["#### 7", "#### 8"], [["#### 7", "#### 9"]])
    assert got["bleu"]["score"] == pytest.approx(expected.score)
    assert set(metrics.METRICS) >= {"exact_match", "accuracy", "rouge", "bleu", "chrf"}


def test_unknown_metric_name_suggests_closest():
    with pytest.raises(ValueError, match=r"unknown metric 'rougeL'; did you mean 'rouge'"):
        metrics.compute_metrics(["rougeL"], ["a"], ["a"])
    with pytest.raises(ValueError, match=r"did you mean 'exact_match'\?"):
        metrics.compute_metrics("exact-match", ["a"], ["a"])
    with pytest.raises(ValueError, match=r"'accuracy'"):
        metrics.compute_metrics(["accuracy"], ["a"], ["a"], {"acuracy": {}})


def test_unknown_option_suggests_closest():
    with pytest.raises(ValueError, match=r"'use_stemer'; did you mean 'use_stemmer'"):
        metrics.compute_metrics(["rouge"], ["a"], ["a"], {"rouge": {"use_stemer": True}})
    with pytest.raises(ValueError, match=r"did you mean 'tokenize'"):
        metrics.compute_metrics(["bleu"], ["a"], ["a"], {"bleu": {"tokenizer": "13a"}})


@pytest.mark.parametrize("name", ["exact_match", "accuracy", "rouge", "bleu", "chrf"])
def test_empty_and_mismatched_input_raise(name):
    with pytest.raises(ValueError, match="no predictions"):
        metrics.METRICS[name]([], [])
    with pytest.raises(ValueError, match="2 predictions, 1 references"):
        metrics.METRICS[name](["a", "b"], ["a"])


def test_module_import_is_light():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import scripts.common.metrics; "
        "print(any(m.split('.')[0] in ('rouge_score', 'sacrebleu', 'nltk') "
        "for m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    assert out.stdout.strip() == "False", out.stderr
