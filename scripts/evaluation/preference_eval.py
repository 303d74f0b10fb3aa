"""Preference metrics of evaluation: how each model scores the chosen and the rejected response
of every validation pair, and DPO's implicit rewards of the tuned model against its reference.

A pair's log-prob is the sum, over the response's tokens (EOS included), of log p(token | prompt,
earlier tokens): the quantity DPO optimises (TRL sums the same tokens). The reference is the
run's base model (with LoRA: the base without the adapter; with full fine-tuning: the base).

Report metrics (flat, beside the text metrics; each model gets the first three):
  chosen_logp       mean summed log-prob of the chosen responses (nats; higher: more likely)
  rejected_logp     mean summed log-prob of the rejected responses (lower is better)
  ranking_accuracy  share of pairs where the model's own log p(chosen) > log p(rejected): the
                    likelihood ranking. For the base (the reference) it is the share it already
                    ranks right: about 0.5 for a model without a preference between
                    responses of similar length (a sum of log-probs favours the shorter one)
  reward_accuracy   tuned only: share of pairs where DPO's implicit reward
                    r(y) = beta * (log p_tuned(y) - log p_ref(y)) of the chosen response exceeds
                    the rejected one's (TRL's rewards/accuracies). The reference's own reward is
                    0 for every response, so the base has no reward_accuracy: read its
                    ranking_accuracy instead
  reward_margin     tuned only: mean r(chosen) - r(rejected) (TRL's rewards/margins)

Pure functions (no torch): the sequences to score and the metrics of the scores.
"""

from __future__ import annotations

from scripts.compiler.objectives import block_of

IGNORE = -100
HIGHER_IS_BETTER = {
    "chosen_logp": True,
    "rejected_logp": False,
    "ranking_accuracy": True,
    "reward_accuracy": True,
    "reward_margin": True,
}
LOGP_METRICS = ("chosen_logp", "rejected_logp", "ranking_accuracy")
REWARD_METRICS = ("reward_accuracy", "reward_margin")


def has_pairs(rows: list[dict]) -> bool:
    """Whether the token rows are preference pairs (tokenize_shard keeps their rejected_ids)."""
    return bool(rows) and all(row.get("rejected_ids") is not None for row in rows)


def pair_beta(train_spec: dict) -> float | None:
    """The beta of the run's implicit reward: `beta` of the objective's settings block in the
    train slice (the train manifest's `spec`, finished by the compiler), or None for objectives
    without one (no reward metrics then)."""
    block = block_of(train_spec.get("objective"))  # a manifest's spec has it; {} (no run) has none
    beta = train_spec[block].get("beta") if block in train_spec else None
    return float(beta) if beta is not None else None


def response_examples(rows: list[dict]) -> tuple[list, list]:
    """(chosen, rejected) sequences as (input_ids, labels) with labels only on the response, for
    scripts.evaluation.generation.label_losses. input_ids hold prompt+chosen; the prompt is their
    first prompt_length ids; rejected_ids continue the same prompt."""
    chosen, rejected = [], []
    for row in rows:
        n = row["prompt_length"]
        prompt, good, bad = row["input_ids"][:n], row["input_ids"][n:], row["rejected_ids"]
        chosen.append((prompt + good, [IGNORE] * n + good))
        rejected.append((prompt + bad, [IGNORE] * n + bad))
    return chosen, rejected


def summed_logps(losses: list[tuple[float, int]]) -> list[float]:
    """Summed log-probs from label_losses' (summed cross-entropy, token count) per sequence."""
    return [-total for total, _ in losses]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def logp_metrics(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    """One model's chosen_logp, rejected_logp and ranking_accuracy (ties rank wrong)."""
    if not chosen or len(chosen) != len(rejected):
        raise ValueError(f"need as many chosen as rejected log-probs, got {len(chosen)} and {len(rejected)}")
    right = [c > r for c, r in zip(chosen, rejected)]
    return {
        "chosen_logp": _mean(chosen),
        "rejected_logp": _mean(rejected),
        "ranking_accuracy": sum(right) / len(right),
    }


def rewards(policy: list[float], reference: list[float], beta: float) -> list[float]:
    """DPO's implicit reward per response: beta * (log p_policy - log p_reference)."""
    return [beta * (p - r) for p, r in zip(policy, reference, strict=True)]


def reward_metrics(policy: tuple[list, list], reference: tuple[list, list], beta: float) -> dict[str, float]:
    """reward_accuracy and reward_margin of the policy against the reference; both arguments
    are (chosen log-probs, rejected log-probs). Ties (equal rewards) count as wrong, as in TRL."""
    good = rewards(policy[0], reference[0], beta)
    bad = rewards(policy[1], reference[1], beta)
    margins = [g - b for g, b in zip(good, bad, strict=True)]
    return {"reward_accuracy": sum(m > 0 for m in margins) / len(margins), "reward_margin": _mean(margins)}


def pair_scores(logps: dict, beta: float | None) -> dict[str, list[dict]]:
    """Per-example scores per model: logp_margin (log p(chosen) - log p(rejected)), and for the
    tuned model reward_margin. `logps[model]` is (chosen log-probs, rejected log-probs)."""
    out = {}
    for model, (chosen, rejected) in logps.items():
        out[model] = [{"logp_margin": round(c - r, 6)} for c, r in zip(chosen, rejected)]
    if beta is not None and "tuned" in logps and "base" in logps:
        good = rewards(logps["tuned"][0], logps["base"][0], beta)
        bad = rewards(logps["tuned"][1], logps["base"][1], beta)
        for score, g, b in zip(out["tuned"], good, bad):
            score["reward_margin"] = round(g - b, 6)
    return out


def preference_metrics(logps: dict, beta: float | None) -> dict[str, dict[str, float]]:
    """Report metrics per model from `logps[model]` = (chosen log-probs, rejected log-probs):
    the log-prob metrics for each model, the reward metrics for the tuned one against the base
    (when both were scored and the objective has a beta)."""
    out = {model: logp_metrics(*pair) for model, pair in logps.items()}
    if beta is not None and "tuned" in logps and "base" in logps:
        out["tuned"].update(reward_metrics(logps["tuned"], logps["base"], beta))
    return out
