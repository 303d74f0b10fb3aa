"""GRPO rewards declared in the spec (issue 16), fast: every reward term type, alone and
combined, gives the value a hand computation gives on fixed strings; a bad reward declaration is
refused when the spec is read, with the fix; a user reward file's text is part of the train key
(not of the data's). Through the workflow: tests/test_grpo.py."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from scripts.compiler.grpo_rules import term_names
from scripts.compiler.spec import SpecError, artifact_keys, load_spec_file
from scripts.training.grpo import (
    format_scores,
    length_scores,
    metric_scores,
    reward_functions,
    total_rewards,
)
from tests.workflow_fixtures import REPO, copy_workflow, snakemake

# chrF of "abc" against "abcd" by hand (sacrebleu's defaults: character orders 1..6, beta 2,
# precision and recall averaged over the orders both strings have): orders 1-3 match all of
# the completion's n-grams (precision 1) and recall 3/4, 2/3, 1/2; order 4+ has no n-gram in
# "abc". F2 = 5 P R / (4 P + R) with P = 1, R = (3/4 + 2/3 + 1/2) / 3.
RECALL = (3 / 4 + 2 / 3 + 1 / 2) / 3
CHRF_ABC = 5 * RECALL / (4 + RECALL)


def scores(term, completions, references, completion_ids=None):
    (function,), _ = reward_functions([term])
    ids = completion_ids or [[0]] * len(completions)
    return function(
        prompts=["p"] * len(completions), completions=completions, completion_ids=ids, reference=references
    )


def test_exact_match_reward_strips_whitespace_and_takes_its_options():
    completions = [" three seven two ", "three seven", "Three Seven Two", "three, seven, two"]
    refs = ["three seven two"] * 4
    assert scores({"metric": "exact_match"}, completions, refs) == [1.0, 0.0, 0.0, 0.0]
    assert scores({"metric": "exact_match", "ignore_case": True}, completions, refs) == [1.0, 0.0, 1.0, 0.0]
    both = {"metric": "exact_match", "ignore_case": True, "ignore_punctuation": True}
    assert scores(both, completions, refs) == [1.0, 0.0, 1.0, 1.0]


def test_accuracy_reward_compares_the_extracted_answers_as_numbers():
    term = {"metric": "accuracy", "extract_regex": r"#### (\-?[0-9\.,]+)"}
    completions = ["so the answer is #### 1,000.", "#### 999", "I do not know", "#### 1000"]
    refs = ["ten hundreds #### 1000"] * 4
    assert scores(term, completions, refs) == [1.0, 0.0, 0.0, 1.0]


def test_rouge_reward_is_the_f1_of_its_type():
    refs = ["three seven two"] * 3
    # "three seven": LCS 2 of 2 predicted and 3 reference words: P 1, R 2/3, F1 0.8
    got = scores({"metric": "rouge"}, ["three seven", "three seven two", "four"], refs)
    assert got == pytest.approx([0.8, 1.0, 0.0])
    # rouge2: bigrams "three seven" of ["three seven", "seven two"]: P 1, R 1/2, F1 2/3
    assert scores({"metric": "rouge", "rouge_type": "rouge2"}, ["three seven"], refs[:1]) == pytest.approx(
        [2 / 3]
    )


def test_chrf_reward_is_sentence_chrf_over_100():
    got = scores({"metric": "chrf"}, ["abc", "abcd", "ab c", "XYZ"], ["abcd"] * 4)
    # whitespace is not part of chrF's character n-grams: "ab c" scores as "abc"
    assert got == pytest.approx([CHRF_ABC, 1.0, CHRF_ABC, 0.0])
    assert metric_scores({"metric": "chrf"}, ["abc"], ["abcd"]) == pytest.approx([0.68862], abs=1e-5)


def test_format_reward_must_match_the_whole_completion():
    pattern = "[a-z]+( [a-z]+)*"
    got = format_scores(pattern, ["three seven", " three seven\n", "three seven 2", "Three", ""])
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_length_penalty_is_the_share_over_max_tokens():
    assert length_scores(4, [[1, 2], [1, 2, 3, 4], [1] * 6, [1] * 12]) == [0.0, 0.0, -0.5, -2.0]


def test_combined_rewards_are_the_weighted_sum_of_the_terms():
    terms = [
        {"metric": "exact_match", "weight": 1.0},
        {"regex": "[a-z]+( [a-z]+)*", "weight": 0.5},
        {"length_penalty": {"max_tokens": 4}, "weight": 2.0},
        {"metric": "chrf", "weight": 1.0},
    ]
    completions = ["abcd", " abc ", "ABC!"]
    ids = [[1, 2, 3], [1] * 6, [1] * 4]
    totals = total_rewards(terms, ["p"] * 3, completions, ids, ["abcd"] * 3)
    # abcd: 1 + 0.5 + 0 + 1; " abc ": 0 + 0.5 + 2 x -0.5 + chrF; "ABC!": nothing matches (case)
    assert totals == pytest.approx([2.5, 0.5 - 1.0 + CHRF_ABC, 0.0])
    assert term_names(terms) == ["exact_match", "format", "length_penalty", "chrf"]
    assert term_names([{"metric": "chrf"}, {"metric": "chrf", "word_order": 2}]) == ["chrf", "chrf_2"]


def test_a_user_reward_function_gets_the_references_and_is_announced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rewards.py").write_text(
        textwrap.dedent(
            """
            def same_word_count(completions, reference, **kwargs):
                return [float(len(c.split()) == len(r.split())) for c, r in zip(completions, reference)]
            """
        )
    )
    told = []
    term = {"function": "same_word_count", "rewards_file": "rewards.py", "weight": 2.0}
    (function,), weights = reward_functions([term], told.append)
    got = function(
        prompts=["p", "p"], completions=["a b c", "a b"], completion_ids=[[1], [1]], reference=["x y z"] * 2
    )
    assert got == [1.0, 0.0] and weights == [2.0] and function.__name__ == "same_word_count"
    assert told and "runs user code" in told[0] and "rewards.py" in told[0]
    totals = total_rewards([term, {"metric": "exact_match"}], ["p"], ["x y z"], [[1]], ["x y z"])
    assert totals == [3.0]


# ---------------------------------------------------------------------------- spec errors (fast)


def grpo_spec(tmp_path, rewards, **train):
    spec = yaml.safe_load((REPO / "specs" / "demo.yaml").read_text())
    spec["train"].update({"objective": "grpo", "grpo": {"num_generations": 4, "rewards": rewards}, **train})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def refusal(path) -> str:
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    return str(err.value)


@pytest.mark.parametrize(
    ("rewards", "expected"),
    [
        ([{"metric": "exact"}], "'exact' is not one of"),
        ([{"metric": "exact"}], "did you mean 'exact_match'"),
        ([{"regex": "[a-z+"}], "train.grpo.rewards[0].regex: '[a-z+' is not a valid regex"),
        (
            [{"metric": "accuracy", "extract_regex": "(#### "}],
            "train.grpo.rewards[0].extract_regex: '(#### ' is not a valid regex",
        ),
        (
            [{"metric": "rouge", "extract_regex": "#### (.*)"}],
            "train.grpo.rewards[0].extract_regex: applies to metric accuracy only; remove it or set metric: accuracy",
        ),
        ([{"metric": "chrf", "regex": "x"}], "train.grpo.rewards[0]: give exactly one of metric"),
        ([{"weight": 2}], "train.grpo.rewards[0]: give exactly one of metric"),
        (
            [{"function": "score", "rewards_file": "nowhere.py"}],
            "train.grpo.rewards[0].rewards_file: 'nowhere.py' not found",
        ),
        ([{"function": "score"}], "needs the file that defines it; add rewards_file: path.py"),
        (
            [{"function": "exact_matc", "rewards_file": "scripts/common/metrics.py"}],
            "'exact_matc' is not defined at the top level of 'scripts/common/metrics.py'; did you mean 'exact_match'?",
        ),
        (
            [{"metric": "chrf", "name": "r"}, {"metric": "rouge", "name": "r"}],
            "the name 'r' is given to two terms",
        ),
        ([], "train.grpo.rewards: [] should be non-empty"),
    ],
)
def test_a_bad_reward_declaration_is_refused_with_the_fix(tmp_path, monkeypatch, rewards, expected):
    path = grpo_spec(tmp_path, rewards)
    monkeypatch.chdir(REPO)  # rewards files are relative to the workflow folder
    assert expected in refusal(path)


def test_grpo_refuses_records_without_a_prompt_and_reference(tmp_path):
    path = grpo_spec(tmp_path, [{"metric": "exact_match"}])
    spec = yaml.safe_load(path.read_text())
    spec["data"]["sources"][0]["fields"] = {"text": "completion"}
    path.write_text(yaml.safe_dump(spec))
    assert "train.objective: grpo samples completions for prompts, but a source maps only text" in refusal(
        path
    )
    spec["data"]["sources"][0]["fields"] = {
        "prompt": "prompt",
        "chosen": "completion",
        "rejected": "completion",
    }
    path.write_text(yaml.safe_dump(spec))
    assert "data.sources map preference pairs (chosen, rejected); map prompt and completion" in refusal(path)


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (
            {"per_device_batch_size": 6},
            "a batch of 6 completions (per_device_batch_size x gradient_accumulation_steps) does not hold whole groups of 4",
        ),
        ({"eval_steps": 10}, "train.eval_steps: grpo has no validation loss to watch"),
        ({"objective": "sft"}, "train.grpo: applies to objective grpo, but train.objective is 'sft'"),
    ],
)
def test_grpo_settings_that_cannot_work_are_refused(tmp_path, train, expected):
    assert expected in refusal(grpo_spec(tmp_path, [{"metric": "exact_match"}], **train))


def test_grpo_without_rewards_is_refused(tmp_path):
    path = grpo_spec(tmp_path, [{"metric": "exact_match"}])
    spec = yaml.safe_load(path.read_text())
    del spec["train"]["grpo"]
    path.write_text(yaml.safe_dump(spec))
    assert "train.grpo: objective grpo needs its rewards" in refusal(path)


def test_grpo_block_bounds_are_checked(tmp_path):
    path = grpo_spec(tmp_path, [{"metric": "exact_match"}])
    spec = yaml.safe_load(path.read_text())
    spec["train"]["grpo"].update(num_generations=1, temperature=0, epsilon=2)
    path.write_text(yaml.safe_dump(spec))
    message = refusal(path)
    assert "train.grpo.num_generations: 1 is less than the minimum of 2" in message
    assert "train.grpo.temperature" in message and "train.grpo.epsilon" in message


def test_a_rewards_file_is_part_of_the_train_key_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rewards.py").write_text(
        "def score(completions, **kwargs):\n    return [0.0] * len(completions)\n"
    )
    path = grpo_spec(tmp_path, [{"function": "score", "rewards_file": "rewards.py"}])
    (run,) = load_spec_file(path)
    assert run.sections["train"]["grpo"]["rewards"][0]["weight"] == 1.0  # defaults filled
    assert run.sections["train"]["grpo"]["beta"] == 0.04
    before = artifact_keys(run.sections)
    (tmp_path / "rewards.py").write_text(
        "def score(completions, **kwargs):\n    return [1.0] * len(completions)\n"
    )
    after = artifact_keys(run.sections)
    assert after["train"] != before["train"]
    assert {k: v for k, v in after.items() if k != "train"} == {
        k: v for k, v in before.items() if k != "train"
    }


BROKEN_REWARDS = "def score(completions, **kwargs):\n    return [1.0 for c in completions\n"
SYNTAX_ERROR = (
    "rewards.py:2: SyntaxError: '[' was never closed in 'return [1.0 for c in completions'; fix the "
    "Python (train.grpo.rewards[0].rewards_file)"
)


def test_a_syntax_error_in_a_rewards_file_is_reported_at_its_line(tmp_path, monkeypatch):
    """The rewards file's own line and text, not the spec's `train:` line (issue 30, point 14);
    through `snakemake -n` without Snakemake's `File ".../rules/common.smk"` line."""
    workdir = copy_workflow(tmp_path / "wf")
    monkeypatch.chdir(workdir)
    (workdir / "rewards.py").write_text(BROKEN_REWARDS)
    path = grpo_spec(workdir / "specs", [{"function": "score", "rewards_file": "rewards.py"}])
    assert refusal(path) == SYNTAX_ERROR
    (workdir / "specs/demo.yaml").unlink()
    proc = snakemake(workdir, "-n", "train", check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == ["invalid spec:", SYNTAX_ERROR]
