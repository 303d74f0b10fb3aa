"""Evaluation metrics: pure functions over prediction / reference strings, no I/O.

Only stdlib and numpy are imported here; rouge_score and sacrebleu are imported inside
the functions that use them. Every metric raises ValueError on empty input or on a
length mismatch. Semantics follow Hugging Face `evaluate` (metrics/exact_match, rouge,
sacrebleu, chrf) unless a docstring says otherwise.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_DIGITS = str.maketrans("", "", string.digits)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_NUMBER_NOISE = re.compile(r"[\s,$]")


def _pair(name: str, predictions: Iterable, references: Iterable) -> tuple[list, list]:
    preds, refs = list(predictions), list(references)
    if not preds:
        raise ValueError(f"{name}: no predictions given; need at least one example")
    if len(preds) != len(refs):
        raise ValueError(f"{name}: {len(preds)} predictions, {len(refs)} references")
    return preds, refs


def exact_match_per_example(
    predictions: Iterable[str],
    references: Iterable[str],
    *,
    strip: bool = True,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
    regexes_to_ignore: Sequence[str] = (),
) -> list[float]:
    """1.0/0.0 per example, with HF evaluate's exact_match options in its order
    (regexes removed, lower-case, ASCII punctuation removed, digits removed). `strip`
    (not in evaluate) trims whitespace before and after those steps. As in evaluate,
    two texts normalised to "" match only if they were equal before normalising."""
    preds, refs = _pair("exact_match", predictions, references)

    def norm(text: str) -> str:
        for regex in regexes_to_ignore:
            text = re.sub(regex, "", text)
        text = text.lower() if ignore_case else text
        text = text.translate(_PUNCTUATION) if ignore_punctuation else text
        text = text.translate(_DIGITS) if ignore_numbers else text
        return text.strip() if strip else text

    scores = []
    for pred, ref in zip(preds, refs):
        pred, ref = (pred.strip(), ref.strip()) if strip else (pred, ref)
        npred, nref = norm(pred), norm(ref)
        scores.append(float(npred == nref and (npred != "" or pred == ref)))
    return scores


def exact_match(
    predictions: Iterable[str],
    references: Iterable[str],
    *,
    strip: bool = True,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
    regexes_to_ignore: Sequence[str] = (),
) -> float:
    """Fraction of exact matches in [0, 1]; options as in `exact_match_per_example`."""
    scores = exact_match_per_example(
        predictions,
        references,
        strip=strip,
        ignore_case=ignore_case,
        ignore_punctuation=ignore_punctuation,
        ignore_numbers=ignore_numbers,
        regexes_to_ignore=regexes_to_ignore,
    )
    return float(np.mean(scores))


def _extract(pattern: re.Pattern, text: str) -> str | None:
    found = pattern.search(text)
    if found is None:
        return None
    return next((g for g in found.groups() if g is not None), found.group(0))


def _canonical(text: str) -> str | float:
    folded = text.strip().casefold()
    number = _NUMBER_NOISE.sub("", folded).rstrip(".")
    return float(number) if _NUMBER.fullmatch(number) else folded


def accuracy_per_example(
    predictions: Iterable[str],
    references: Iterable,
    *,
    labels: Iterable | None = None,
    extract_regex: str | None = None,
) -> list[float]:
    """1.0/0.0 per example; see `accuracy`."""
    preds, refs = _pair("accuracy", predictions, references)
    pattern = re.compile(extract_regex) if extract_regex else None
    allowed = None if labels is None else {str(x).strip().casefold() for x in labels}
    scores = []
    for pred, ref in zip(preds, map(str, refs)):
        if pattern is not None:
            pred, ref_answer = _extract(pattern, pred), _extract(pattern, ref)
            ref = ref if ref_answer is None else ref_answer
        if pred is None or (allowed is not None and pred.strip().casefold() not in allowed):
            scores.append(0.0)  # unparseable, or not one of the labels
        else:
            scores.append(float(_canonical(pred) == _canonical(ref)))
    return scores


def accuracy(
    predictions: Iterable[str],
    references: Iterable,
    *,
    labels: Iterable | None = None,
    extract_regex: str | None = None,
) -> float:
    """Fraction correct in [0, 1]; answers compare stripped and case-folded.

    extract_regex: the prediction's answer is the first capture group that matched
    (the whole match if the regex has none); no match counts as wrong. The reference is
    extracted the same way, or used whole if it does not match. Numbers compare as
    numbers once whitespace, ",", "$" and a trailing "." are dropped ("1,000." == "1000").
    labels: a prediction counts only if it is one of the labels (and equals the reference).
    """
    scores = accuracy_per_example(predictions, references, labels=labels, extract_regex=extract_regex)
    return float(np.mean(scores))


def regex_match_per_example(
    predictions: Iterable[str], references: Iterable | None = None, *, pattern: str
) -> list[float]:
    """1.0 where `pattern` is found in the generation (re.search; anchor it with ^...$ to
    match the whole text), else 0.0. The references are not read: this scores a form (a style,
    a format), not correctness."""
    preds = list(predictions)
    if not preds:
        raise ValueError("regex_match: no predictions given; need at least one example")
    if references is not None:
        _pair("regex_match", preds, references)
    compiled = re.compile(pattern)
    return [float(compiled.search(pred) is not None) for pred in preds]


def regex_match(predictions: Iterable[str], references: Iterable | None = None, *, pattern: str) -> float:
    """Share of generations in which `pattern` is found, in [0, 1]: for example the share
    answered in a required format or style (`^[a-z]+(, [a-z]+)*$`)."""
    return float(np.mean(regex_match_per_example(predictions, references, pattern=pattern)))


def _rouge_scores(predictions, references, rouge_types, use_stemmer, tokenizer):
    from rouge_score import rouge_scorer

    preds, refs = _pair("rouge", predictions, references)
    wrapped = SimpleNamespace(tokenize=tokenizer) if tokenizer else None
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer, tokenizer=wrapped)
    return [
        scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(ref, pred)
        for pred, ref in zip(preds, refs)
    ]


def rouge(
    predictions: Iterable[str],
    references: Iterable,
    *,
    rouge_types: Sequence[str] | str = ROUGE_TYPES,
    use_stemmer: bool = False,
    use_aggregator: bool = True,
    tokenizer: Callable[[str], list[str]] | None = None,
    seed: int | None = 0,
) -> dict[str, float]:
    """ROUGE F-measures as HF evaluate computes them: rouge_score's RougeScorer per
    example (a list of references: score_multi, best F1), aggregated as the `mid`
    F-measure of a BootstrapAggregator, i.e. the median of 1000 bootstrap means, not the
    plain mean. evaluate leaves numpy's global RNG unseeded; we seed it with `seed` and
    restore it afterwards (seed=None: untouched, non-deterministic like evaluate).
    use_aggregator=False gives the plain mean F1 (evaluate returns the per-example list).
    Text is passed as is: rougeLsum splits sentences on "\\n" only, so on one-line text
    it equals rougeL. The default tokenizer keeps only [a-z0-9] runs: non-Latin scripts
    score 0 unless a `tokenizer` (str -> list of tokens) is given."""
    rouge_types = (rouge_types,) if isinstance(rouge_types, str) else tuple(rouge_types)
    scores = _rouge_scores(predictions, references, rouge_types, use_stemmer, tokenizer)
    if not use_aggregator:
        return {k: float(np.mean([s[k].fmeasure for s in scores])) for k in rouge_types}
    from rouge_score import scoring

    aggregator = scoring.BootstrapAggregator()
    for score in scores:
        aggregator.add_scores(score)
    state = np.random.get_state()
    try:
        if seed is not None:
            np.random.seed(seed)
        result = aggregator.aggregate()
    finally:
        if seed is not None:
            np.random.set_state(state)
    return {key: float(value.mid.fmeasure) for key, value in result.items()}


def rouge_per_example(
    predictions: Iterable[str],
    references: Iterable,
    *,
    rouge_type: str = "rougeL",
    use_stemmer: bool = False,
    tokenizer: Callable[[str], list[str]] | None = None,
) -> list[float]:
    """Per-example F1 of one ROUGE type (default rougeL), as in `rouge`."""
    scores = _rouge_scores(predictions, references, (rouge_type,), use_stemmer, tokenizer)
    return [float(s[rouge_type].fmeasure) for s in scores]


def _streams(name: str, predictions, references) -> tuple[list, list]:
    preds, refs = _pair(name, predictions, references)
    refs = [[ref] if isinstance(ref, str) else list(ref) for ref in refs]
    if len({len(r) for r in refs}) != 1:
        raise ValueError(f"{name}: each prediction needs the same number of references")
    return preds, [list(stream) for stream in zip(*refs)]


def bleu(predictions: Iterable[str], references: Iterable, **options) -> dict:
    """sacrebleu.corpus_bleu: score 0..100, precisions, brevity_penalty, lengths.
    A reference is a string or a list of strings (same count for every example);
    options (tokenize, lowercase, smooth_method, ...) go to corpus_bleu."""
    import sacrebleu

    preds, streams = _streams("bleu", predictions, references)
    out = sacrebleu.corpus_bleu(preds, streams, **options)
    return {
        "score": float(out.score),
        "precisions": [float(p) for p in out.precisions],
        "brevity_penalty": float(out.bp),
        "sys_len": int(out.sys_len),
        "ref_len": int(out.ref_len),
    }


def chrf(predictions: Iterable[str], references: Iterable, **options) -> dict:
    """sacrebleu.corpus_chrf: score 0..100. References as for `bleu`; options
    (char_order, word_order, beta, ...) go to corpus_chrf; word_order=2 is chrF++."""
    import sacrebleu

    preds, streams = _streams("chrf", predictions, references)
    out = sacrebleu.corpus_chrf(preds, streams, **options)
    orders = {"char_order": out.char_order, "word_order": out.word_order}
    return {"score": float(out.score), **orders, "beta": out.beta}


def chrf_per_example(predictions: Iterable[str], references: Iterable, **options) -> list[float]:
    """sacrebleu.sentence_chrf per example, 0..100; references and options as for `chrf`."""
    import sacrebleu

    preds, refs = _pair("chrf", predictions, references)
    refs = [[ref] if isinstance(ref, str) else list(ref) for ref in refs]
    return [float(sacrebleu.sentence_chrf(p, r, **options).score) for p, r in zip(preds, refs)]


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross-entropy in nats); math.inf rather than overflowing."""
    loss = float(mean_loss)
    if math.isnan(loss):
        raise ValueError("perplexity: mean_loss is NaN")
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class Metric:
    """One entry of evaluate.metrics. function: the corpus score of predictions against
    references (None for the loss metrics, which come from the model's loss: evaluation.py);
    per_example: one score per example (None: corpus only, like BLEU); reports: the report
    metric names it yields; higher_is_better: their direction; options: the evaluate section's
    block of keyword arguments for it (None: none); seeded: it also takes evaluate.seed."""

    function: Callable[..., float | dict] | None
    per_example: Callable[..., list[float]] | None
    reports: tuple[str, ...]
    higher_is_better: bool
    options: str | None = None
    seeded: bool = False


# The metric table: the evaluate schema's enum and the report schema's metric names are tied to
# it (tests/test_tables.py). Adding a metric is one entry here plus its options block there.
TABLE: dict[str, Metric] = {
    "exact_match": Metric(exact_match, exact_match_per_example, ("exact_match",), True, "exact_match"),
    "accuracy": Metric(accuracy, accuracy_per_example, ("accuracy",), True, "accuracy"),
    "rouge": Metric(rouge, rouge_per_example, ROUGE_TYPES, True, "rouge", seeded=True),
    "bleu": Metric(bleu, None, ("bleu",), True, "bleu"),
    "chrf": Metric(chrf, chrf_per_example, ("chrf",), True, "chrf"),
    "regex_match": Metric(regex_match, regex_match_per_example, ("regex_match",), True, "regex_match"),
    "loss": Metric(None, None, ("validation_loss",), False),
    "perplexity": Metric(None, None, ("validation_loss", "perplexity"), False),
}
# The metrics computed from generations, by name (compute_metrics runs them).
METRICS: dict[str, Callable[..., float | dict]] = {
    name: metric.function for name, metric in TABLE.items() if metric.function is not None
}
# Report metric name -> whether a larger value is better (loss and perplexity: lower is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    report: metric.higher_is_better for metric in TABLE.values() for report in metric.reports
}


def improved(name: str, base: float, tuned: float) -> bool:
    """Whether `tuned` is strictly better than `base` on report metric `name`."""
    return tuned > base if HIGHER_IS_BETTER[name] else tuned < base


def _unknown(what: str, name: str, known: Iterable[str]) -> ValueError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint} (known: {', '.join(known)})")


def _check_options(name: str, options: Mapping) -> None:
    fn = METRICS[name]
    if name in ("bleu", "chrf"):  # these pass their options on to sacrebleu
        import sacrebleu

        fn = getattr(sacrebleu, f"corpus_{name}")
    params = inspect.signature(fn).parameters
    known = [p for p in params if p not in ("predictions", "references", "hypotheses")]
    for key in options:
        if key not in known:
            raise _unknown(f"option of {name}", key, known)


def compute_metrics(
    names: Iterable[str] | str,
    predictions: Iterable[str],
    references: Iterable,
    options: Mapping[str, Mapping | None] | None = None,
) -> dict[str, float | dict]:
    """Run each named metric of METRICS and return {name: result}. `options` maps a
    metric name to its keyword arguments. An unknown metric or option name raises
    ValueError with a did-you-mean suggestion."""
    names = [names] if isinstance(names, str) else list(names)
    options = dict(options or {})
    for name in [*names, *options]:
        if name not in METRICS:
            raise _unknown("metric", name, METRICS)
    for name, opts in options.items():
        _check_options(name, opts or {})
    preds, refs = list(predictions), list(references)
    return {name: METRICS[name](preds, refs, **(options.get(name) or {})) for name in names}
