"""GRPO reward terms under limits (issue 30, points 3 and 6), fast: a reward that returns NaN,
inf or a string is an error naming the term, its file and the record; a step where no
completion got a reward fails; a call that runs past its time limit (a sleeping function, a
regex that backtracks without end) stops with the term and the record; what a reward prints is
capped; log.jsonl never holds NaN or Infinity. Through the real train step: tests/test_grpo.py.
"""

from __future__ import annotations

import json
import math
import time
import types

import pytest

from scripts.training.grpo import reward_functions
from scripts.training.reward_calls import RewardError, step_reward_error
from scripts.training.train_log import log_entry

PROMPTS = ["spell 3", "spell 72"]
IDS = ["0123456789abcdef", "fedcba9876543210"]


def call(term, tmp_path, monkeypatch, source=None, completions=("three", "seven two")):
    """Score `completions` with one term (a user function `score` when `source` is given)."""
    if source is not None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "rewards.py").write_text(source)
        term = {"function": "score", "rewards_file": "rewards.py", **term}
    (function,), _ = reward_functions([term])
    completions = list(completions)
    return function(
        prompts=PROMPTS[: len(completions)],
        completions=completions,
        completion_ids=[[1]] * len(completions),
        reference=["three", "seventy two"][: len(completions)],
        record_id=IDS[: len(completions)],
    )


def refused(*args, **kwargs) -> str:
    with pytest.raises(RewardError) as err:
        call(*args, **kwargs)
    return str(err.value)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("[1.0, float('nan')]", "returned nan for record fedcba9876543210 (prompt 'spell 72')"),
        ("[float('inf'), 0.0]", "returned inf for record 0123456789abcdef (prompt 'spell 3')"),
        ("'1.0'", "returned str '1.0', not a list of numbers"),
        ("[1.0, 'good']", "returned str 'good' for record fedcba9876543210"),
        ("[1.0]", "returned 1 values for 2 completions"),
    ],
)
def test_a_reward_that_is_not_a_finite_number_names_the_term_file_and_record(
    tmp_path, monkeypatch, returned, expected
):
    message = refused(
        {}, tmp_path, monkeypatch, f"def score(completions, **kwargs):\n    return {returned}\n"
    )
    assert message.startswith("rewards.py: reward term 'score' (function 'score') returned"), message
    assert expected in message


def test_none_is_no_reward_and_a_step_without_any_reward_fails(tmp_path, monkeypatch):
    source = "def score(completions, **kwargs):\n    return [None, 0.5]\n"
    assert call({}, tmp_path, monkeypatch, source) == [None, 0.5]
    nan = math.nan
    assert step_reward_error([[nan, 1.0], [nan, nan]], ["a", "b"]) is None  # some completion scored
    error = step_reward_error([[nan, nan]] * 4, ["exact_match", "score"])
    assert "no reward for any of the 4 completions of this step" in error
    assert "every reward term (exact_match, score) returned None" in error


def test_an_exception_in_a_reward_names_the_term_and_the_batch(tmp_path, monkeypatch):
    message = refused({}, tmp_path, monkeypatch, "def score(completions, **kwargs):\n    return 1 / 0\n")
    assert "rewards.py: reward term 'score' (function 'score') failed while scoring 2 completions" in message
    assert "ZeroDivisionError: division by zero" in message


def test_a_rewards_file_that_fails_to_load_names_its_term(tmp_path, monkeypatch):
    message = refused(
        {}, tmp_path, monkeypatch, "import no_such_module\n\ndef score(**kwargs):\n    return []\n"
    )
    assert message == (
        "rewards.py: reward term 'score' (function 'score') failed while loading its file: "
        "ModuleNotFoundError: No module named 'no_such_module'"
    )


def test_a_reward_past_its_time_limit_is_stopped(tmp_path, monkeypatch):
    source = (
        "import time\n\ndef score(completions, **kwargs):\n"
        "    try:\n        time.sleep(60)\n    except Exception:\n        pass\n"  # cannot swallow it
        "    return [1.0] * len(completions)\n"
    )
    start = time.monotonic()
    message = refused({"timeout_s": 0.5}, tmp_path, monkeypatch, source)
    assert time.monotonic() - start < 5
    assert "reward term 'score' (function 'score') took more than 0.5 s for one call" in message
    assert (
        "(while scoring 2 completions, the first of record 0123456789abcdef" in message
        and "raise the term's timeout_s" in message
    )


@pytest.mark.parametrize(
    ("term", "limit"),
    [
        ({"regex": "(a+)+b"}, 5),  # the default of a regex term
        ({"metric": "accuracy", "extract_regex": "(a+)+b", "timeout_s": 1}, 1),
    ],
)
def test_a_backtracking_regex_is_stopped_naming_the_term_and_record(tmp_path, monkeypatch, term, limit):
    start = time.monotonic()
    message = refused(term, tmp_path, monkeypatch, completions=["ab", "a" * 40])
    assert time.monotonic() - start < limit + 3
    name = "format" if "regex" in term else "accuracy"
    assert f"train.grpo.rewards term {name!r} took more than {limit} s" in message
    assert "(while scoring record fedcba9876543210 (prompt 'spell 72'))" in message


def test_what_a_reward_prints_is_capped(tmp_path, monkeypatch, capsys):
    source = "def score(completions, **kwargs):\n    print('x' * 10_000_000)\n    return [1.0] * len(completions)\n"
    assert call({}, tmp_path, monkeypatch, source) == [1.0, 1.0]
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err) < 17_000
    assert "note: reward term 'score' printed 10,000,001 characters in one call" in captured.err


def test_the_training_log_never_holds_nan_or_infinity():
    state = types.SimpleNamespace(global_step=3, epoch=0.5, num_input_tokens_seen=10)
    logs = {"loss": 0.5, "reward": math.inf, "rewards/score/mean": math.nan, "rewards/chrf/mean": 0.25}
    line = json.dumps(log_entry(state, logs, 1.0, None))
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line)["rewards/chrf/mean"] == 0.25 and json.loads(line)["loss"] == 0.5
