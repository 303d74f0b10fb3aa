"""Training on preference pairs with TRL's DPOTrainer, from tunemake's token shards.

The shards already hold each pair tokenized with the chat template (tokenize_shard: prompt+chosen
in input_ids, the prompt's length, the rejected response's ids), so TRL's own tokenization is
skipped (TokenizedDPOTrainer). The reference is the run's base model (with LoRA, the base with
the adapter disabled: the same numbers). Its log-probs are computed once by the reference_logps
step (scripts/reference_logps.py, TRL's own computation, `reference_logprobs` here) and every
run that shares the tokens and the reference reads them: training then runs the policy only.
"""

from __future__ import annotations

import contextlib
import math

REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
REFERENCE_BATCH = 8  # fixed, not the run's batch size: the values must not depend on the run


class ReferenceError(ValueError):
    """Reference log-probs that do not belong to the tokens (missing, extra or non-finite)."""


def preference_table(token_files, split: str):
    """The split's pairs as a pyarrow table ordered by record id: id, input_ids (prompt+chosen),
    prompt_length, rejected_ids."""
    from scripts.common.token_splits import load_split

    return load_split(token_files, split, ["id", "input_ids", "prompt_length", "rejected_ids"])


def preference_dataset(token_files, split: str, reference=None):
    """{prompt_ids, chosen_ids, rejected_ids} rows of a split (ordered by record id), plus the
    reference log-probs when `reference` (a table from reference_logps) is given; None when the
    split is empty."""
    from datasets import Dataset

    table = preference_table(token_files, split)
    if table.num_rows == 0:
        return None
    ids, lengths = table["input_ids"].to_pylist(), table["prompt_length"].to_pylist()
    columns = {
        "prompt_ids": [row[:n] for row, n in zip(ids, lengths)],
        "chosen_ids": [row[n:] for row, n in zip(ids, lengths)],
        "rejected_ids": table["rejected_ids"].to_pylist(),
    }
    if reference is not None:
        columns.update(reference_columns(reference, split, table["id"].to_pylist()))
    return Dataset.from_dict(columns)


def split_dataset(token_files, split: str, train: dict, reference: str | None = None):
    """The objective table's dataset of objective dpo: preference_dataset with the reference
    log-probs of the reference_logps step's file `reference` (when given)."""
    import pyarrow.parquet as pq

    table = pq.read_table(reference) if reference else None
    try:
        return preference_dataset(token_files, split, table)
    except ReferenceError as exc:
        raise ReferenceError(f"{reference}: {exc}") from None


def reference_columns(reference, split: str, ids: list) -> dict:
    """The reference log-probs of a split's pairs, in the order of `ids`; refuses values that
    are missing, extra or not finite (so a stale or damaged file is never trained on)."""
    rows = reference.to_pylist()
    values = {r["id"]: r for r in rows if r["split"] == split}
    missing = [i for i in ids if i not in values]
    if missing or len(values) != len(ids):
        raise ReferenceError(
            f"the reference log-probs do not match the {split} pairs: {len(missing)} pairs have no "
            f"value, {len(values) - len(ids) + len(missing)} values have no pair; rebuild them "
            "(delete results/reference/ and run again)"
        )
    out = {name: [values[i][name] for i in ids] for name in REFERENCE_COLUMNS}
    bad = [i for i in ids if not all(math.isfinite(values[i][name]) for name in REFERENCE_COLUMNS)]
    if bad:
        raise ReferenceError(f"the reference log-probs of {split} pairs {bad[:5]} are not finite")
    return out


@contextlib.contextmanager
def _no_model_hash():
    """TRL hashes every weight of the reference when precompute_ref_log_probs is on, to key its
    own cache; tunemake's content key does that job, so the hash (seconds on a 1B model) is
    skipped."""
    import trl.trainer.dpo_trainer as module

    original = module.hash_module
    module.hash_module = lambda model: "tunemake-reference-logps"
    try:
        yield
    finally:
        module.hash_module = original


def dpo_trainer(
    model, lora_config, args: dict, dpo: dict, train_set, eval_set, tokenizer, callbacks, precompute=False
):
    """A DPOTrainer on already tokenized pairs. `args` are the TrainingArguments every objective
    shares (scripts/train_model.py); `lora_config` is None for full fine-tuning. With the
    reference log-probs in the datasets (REFERENCE_COLUMNS), no reference model is run or kept;
    `precompute`: TRL computes them when it starts (the reference_logps step)."""
    from trl import DPOConfig, DPOTrainer

    precomputed = precompute or REFERENCE_COLUMNS[0] in train_set.column_names

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}")
            return dataset  # tokenize_shard did it, with the run's chat template

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if REFERENCE_COLUMNS[0] in dataset.column_names:
                return dataset  # the reference_logps step's values
            return super()._precompute_ref_logps(dataset, name, batch_size)

    config = DPOConfig(
        **args,
        beta=dpo["beta"],
        # RPO: the preference loss plus a weighted NLL on the chosen responses
        loss_type=[dpo["loss_type"], *(["sft"] if dpo.get("sft_weight") else [])],
        loss_weights=[1.0, dpo["sft_weight"]] if dpo.get("sft_weight") else None,
        label_smoothing=dpo["label_smoothing"],
        max_length=None,  # tokenize.max_length already applied
        precompute_ref_log_probs=precomputed,
        precompute_ref_batch_size=REFERENCE_BATCH,
    )
    with _no_model_hash() if precomputed else contextlib.nullcontext():
        return TokenizedDPOTrainer(
            model=model,
            args=config,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=lora_config,
        )


def build_trainer(
    model, lora, args: dict, train: dict, train_set, eval_set, tokenizer, callbacks, announce=None
):
    """The objective table's trainer of objective dpo (dpo_trainer with train.dpo)."""
    return dpo_trainer(model, lora, args, train["dpo"], train_set, eval_set, tokenizer, callbacks)


def reference_logprobs(model, tokenizer, args: dict, train_set, eval_set, quantized: bool = False):
    """(train, validation or None) as (chosen log-probs, rejected log-probs) of the base `model`
    on the pairs (datasets from preference_dataset): TRL's own precompute pass, at
    REFERENCE_BATCH pairs per batch (the numbers training would compute for its reference).
    A 4-bit base gets a LoRA adapter that the pass disables, as in QLoRA training (transformers'
    Trainer refuses a purely quantized model)."""
    from peft import LoraConfig

    adapter = LoraConfig(r=1, target_modules="all-linear", task_type="CAUSAL_LM") if quantized else None
    trainer = dpo_trainer(
        model,
        adapter,
        args,
        {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0},
        train_set,
        eval_set,
        tokenizer,
        [],
        precompute=True,
    )
    pick = lambda data: tuple(data[c] for c in REFERENCE_COLUMNS)  # noqa: E731
    return pick(trainer.train_dataset), pick(trainer.eval_dataset) if eval_set is not None else None
