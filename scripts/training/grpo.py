"""GRPO (reinforcement learning with verifiable rewards) from tunemake's token shards: the reward
terms of train.grpo.rewards as functions TRL calls, and a GRPOTrainer that samples from the
shards' own prompt ids.

Each record gives a prompt (its tokenized input_ids[:prompt_length], exactly the ids the
evaluate step generates from, chat template included) and a reference (its completion, or the
last assistant turn: the shards' `reference` column). For every prompt TRL samples
num_generations completions (transformers' generate, seeded by train.seed) and scores each
with every term; the total is the weighted sum (TRL's reward_weights), and a completion's
advantage is its total against its group's. TRL logs rewards/<term>/mean, reward (the total),
kl and completions/mean_length per logging step.

The term functions are pure (strings and token ids in, floats out): tests compute them by hand.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from scripts.compiler.grpo_rules import kind_of, term_names
from scripts.training.reward_calls import (
    DEFAULT_TIMEOUT_S,
    RewardError,
    checked_scores,
    limited_call,
    record_label,
    step_reward_error,
)

DATASET_COLUMNS = ("prompt", "prompt_ids", "reference", "record_id")


def _stripped(completions) -> list[str]:
    return [str(text).strip() for text in completions]


def metric_scores(term: dict, completions: list[str], references: list[str]) -> list[float]:
    """Per completion: the metric of the term against its reference, in 0..1 (chrF / 100)."""
    from scripts.common import metrics as M

    preds, metric = _stripped(completions), term["metric"]
    if metric == "exact_match":
        options = {k: term[k] for k in ("ignore_case", "ignore_punctuation") if k in term}
        return M.exact_match_per_example(preds, references, strip=True, **options)
    if metric == "accuracy":
        return M.accuracy_per_example(preds, references, extract_regex=term.get("extract_regex"))
    if metric == "rouge":
        return M.rouge_per_example(preds, references, rouge_type=term.get("rouge_type", "rougeL"))
    scores = M.chrf_per_example(preds, references, word_order=term.get("word_order", 0))
    return [score / 100.0 for score in scores]


def format_scores(pattern: str, completions: list[str]) -> list[float]:
    """1.0 where the regex matches the whole (stripped) completion, else 0.0."""
    compiled = re.compile(pattern)
    return [float(compiled.fullmatch(text) is not None) for text in _stripped(completions)]


def length_scores(max_tokens: int, completion_ids: list[list[int]]) -> list[float]:
    """0 up to max_tokens generated tokens (EOS included), then -(tokens - max_tokens) / max_tokens."""
    return [-max(0, len(ids) - max_tokens) / max_tokens for ids in completion_ids]


def load_user_function(path: str, name: str) -> Callable:
    """The function `name` of the Python file `path` (runs the file: user code)."""
    module_name = "tunemake_rewards_" + re.sub(r"\W", "_", Path(path).stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{path}: {name!r} is not a function of this file")
    return function


def term_place(term: dict, name: str) -> str:
    """How messages name a term: its name, and its function and file for user code."""
    if kind_of(term) == "function":
        return f"{term['rewards_file']}: reward term {name!r} (function {term['function']!r})"
    return f"train.grpo.rewards term {name!r}"


def builtin_scores(term: dict, completions, completion_ids, reference, at: list[int]) -> list[float]:
    """A built-in term's scores; terms that match a regex score one completion at a time, with
    `at[0]` the one being scored (a time limit then names it)."""
    kind = kind_of(term)
    if kind == "length_penalty":
        return length_scores(term["length_penalty"]["max_tokens"], completion_ids)
    if kind == "metric" and "extract_regex" not in term:
        return metric_scores(term, completions, reference)
    scores = []
    for at[0], (text, ref) in enumerate(zip(completions, reference or [None] * len(completions))):
        one = format_scores(term["regex"], [text]) if kind == "regex" else metric_scores(term, [text], [ref])
        scores += one
    return scores


def term_function(term: dict, name: str, user: Callable | None = None) -> Callable:
    """The reward function TRL calls for one term: (prompts, completions, completion_ids,
    reference, **dataset columns and TRL's kwargs) -> one float (or None) per completion, under
    reward_calls' limits (a time limit per call, capped output, finite numbers only)."""
    matches = "regex" in term or "extract_regex" in term
    default = DEFAULT_TIMEOUT_S["regex" if matches else "function" if user else "metric"]
    where, timeout = term_place(term, name), term.get("timeout_s", default)

    def reward(prompts=None, completions=None, completion_ids=None, reference=None, **kwargs):
        at = [None]  # the completion a built-in term is scoring, for a time limit's message

        def call():
            if user is None:
                return builtin_scores(term, completions, completion_ids, reference, at)
            return user(
                prompts=prompts,
                completions=completions,
                completion_ids=completion_ids,
                reference=reference,
                **kwargs,
            )

        def doing() -> str:
            if isinstance(at[0], int):
                return f"scoring {record_label(at[0], prompts, kwargs)}"
            first = record_label(0, prompts, kwargs) if completions else "nothing"
            return f"scoring {len(completions or [])} completions, the first of {first}"

        out = limited_call(call, where, name, timeout, doing)
        return checked_scores(out, len(completions), where, prompts, kwargs)

    reward.__name__ = reward.__qualname__ = name  # TRL logs rewards/<__name__>/mean
    return reward


def reward_functions(terms: list[dict], announce=None) -> tuple[list[Callable], list[float]]:
    """(a reward function per term, their weights). User functions are loaded from their files;
    `announce(message)` is told about each (it runs user code)."""
    functions = []
    for term, name in zip(terms, term_names(terms)):
        user = None
        if kind_of(term) == "function":
            if announce:
                announce(
                    f"train.grpo.rewards term {name!r} runs user code: function {term['function']!r} "
                    f"of {term['rewards_file']!r}"
                )
            user = limited_call(  # runs the file's top level: an error or a hang there names it
                functools.partial(load_user_function, term["rewards_file"], term["function"]),
                term_place(term, name),
                name,
                DEFAULT_TIMEOUT_S["function"],
                lambda: "loading its file",
            )
        functions.append(term_function(term, name, user))
    return functions, [float(term.get("weight", 1.0)) for term in terms]


def total_rewards(terms: list[dict], prompts, completions, completion_ids, references) -> list[float]:
    """The weighted sum of the terms per completion, as TRL adds them (a term's None counts 0)."""
    functions, weights = reward_functions(terms)
    totals = [0.0] * len(completions)
    for function, weight in zip(functions, weights):
        scores = function(
            prompts=prompts, completions=completions, completion_ids=completion_ids, reference=references
        )
        totals = [t + weight * (s or 0.0) for t, s in zip(totals, scores)]
    return totals


def prompt_dataset(token_files, split: str):
    """The split's {prompt, prompt_ids, reference, record_id} rows, ordered by record id, or None
    when empty (record_id reaches reward functions too: messages name the record)."""
    from datasets import Dataset

    from scripts.common.token_splits import load_split

    table = load_split(token_files, split, ["input_ids", "prompt_length", "prompt", "reference", "id"])
    if table.num_rows == 0:
        return None
    ids, lengths = table["input_ids"].to_pylist(), table["prompt_length"].to_pylist()
    return Dataset.from_dict(
        {
            "prompt": table["prompt"].to_pylist(),
            "prompt_ids": [row[:n] for row, n in zip(ids, lengths)],
            "reference": table["reference"].to_pylist(),
            "record_id": table["id"].to_pylist(),
        }
    )


def grpo_config(args: dict, grpo: dict, weights: list[float]):
    """TRL's GRPOConfig from the TrainingArguments every objective shares and train.grpo."""
    from trl import GRPOConfig

    return GRPOConfig(
        **{**args, "include_num_input_tokens_seen": "no"},  # GRPO counts prompt + completion tokens itself
        num_generations=grpo["num_generations"],
        max_completion_length=grpo["max_completion_length"],
        temperature=grpo["temperature"],
        top_k=grpo.get("top_k", 0),
        beta=grpo["beta"],
        epsilon=grpo["epsilon"],
        reward_weights=weights,
        remove_unused_columns=False,
        log_completions=False,
    )


def tokenized_trainer_class():
    """GRPOTrainer generating from the dataset's prompt_ids (tokenize_shard's ids, chat template
    included) instead of re-tokenizing the prompt text."""
    from trl import GRPOTrainer

    class TokenizedGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            self._batch_prompt_ids = [list(x["prompt_ids"]) for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _tokenize_prompts(self, prompts):
            if len(prompts) != len(self._batch_prompt_ids):
                raise ValueError("GRPO: the prompts of a batch lost their token ids")
            return self._batch_prompt_ids, None, {}

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            from scripts.common.cli import fail

            try:
                rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            except RewardError as exc:
                fail(f"{exc} (training step {self.state.global_step + 1})")
            error = step_reward_error(rewards.tolist(), list(self.reward_func_names))
            if error:
                fail(f"training step {self.state.global_step + 1}: {error}")
            return rewards

    return TokenizedGRPOTrainer


def grpo_trainer(model, lora_config, args: dict, grpo: dict, train_set, tokenizer, callbacks, announce=None):
    """A GRPOTrainer on the shards' prompts with the spec's rewards. `lora_config` is None for
    full fine-tuning (the KL reference is then a frozen copy of the start model, loaded by TRL);
    with LoRA, TRL adds the adapter and the reference is the model with it disabled."""
    try:
        functions, weights = reward_functions(grpo["rewards"], announce)
    except RewardError as exc:
        from scripts.common.cli import fail

        fail(str(exc))
    trainer_class = tokenized_trainer_class()
    return trainer_class(
        model=model,
        reward_funcs=functions,
        args=grpo_config(args, grpo, weights),
        train_dataset=train_set,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config,
    )


def split_dataset(token_files, split: str, train: dict, reference=None):
    """The objective table's dataset of objective grpo: the split's prompts (prompt_dataset)."""
    return prompt_dataset(token_files, split)


def build_trainer(
    model, lora, args: dict, train: dict, train_set, eval_set, tokenizer, callbacks, announce=None
):
    """The objective table's trainer of objective grpo (no validation set: grpo has none)."""
    return grpo_trainer(model, lora, args, train["grpo"], train_set, tokenizer, callbacks, announce=announce)
