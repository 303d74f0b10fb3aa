"""Helpers shared by the preference training tests (tests/test_preference_training.py,
tests/test_preference_objectives.py): preference data made from the demo's records."""

from __future__ import annotations


def rejected_answer(words: list[str]) -> str:
    """The rejected answer of a pair: the chosen answer's words reversed (doubled where reversing
    changes nothing, so that the two always differ)."""
    flipped = list(reversed(words))
    return " ".join(flipped if flipped != words else words + words)
