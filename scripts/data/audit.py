"""The data audit's checks, shared by tokenize_shard (per shard, stored in its manifest) and
audit_data (which sums the shards' results, so an edit re-audits only the shards it touched).
"""

from __future__ import annotations

from collections import Counter

IGNORE = -100
CHECKS = {
    "no_labels": "has no token with a label (nothing to learn)",
    "label_mismatch": "has a label that is neither -100 nor its input id",
    "no_eos_at_turn_end": "has a trained span (assistant turn or completion) without EOS as a label",
    "too_long": "is longer than tokenize.max_length",
    "rejected_without_eos": "is a preference pair whose rejected answer has no EOS (or is empty)",
}


def problem_masks(ids, labels, lengths, eos_id, max_length: int) -> dict:
    """Per-example boolean arrays, one per check, from flat token arrays (vectorised: 1M examples
    take about a second)."""
    import numpy as np

    n = len(lengths)
    example = np.repeat(np.arange(n), lengths)
    labelled = labels != IGNORE
    first = np.zeros(len(labels), bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first[offsets[lengths > 0]] = True
    previous = np.concatenate([[False], labelled[:-1]]) & ~first
    last = np.concatenate([first[1:], [True]])
    following = np.concatenate([labelled[1:], [False]]) & ~last
    starts, ends = np.flatnonzero(labelled & ~previous), np.flatnonzero(labelled & ~following)
    eos = labelled & (labels == (-1 if eos_id is None else eos_id))
    counts = np.cumsum(eos)
    without_eos = (counts[ends] - counts[starts] + eos[starts]) == 0
    return {
        "no_labels": np.bincount(example, weights=labelled, minlength=n) == 0,
        "label_mismatch": np.bincount(example, weights=labelled & (labels != ids), minlength=n) > 0,
        "no_eos_at_turn_end": np.bincount(example[starts[without_eos]], minlength=n) > 0,
        "too_long": lengths > max_length,
    }


def audit(table, eos_id, max_length: int) -> tuple[Counter, dict]:
    """(failed examples per check, up to five example ids per check) of a token table."""
    import numpy as np
    import pyarrow.compute as pc

    ids = table.column("input_ids").combine_chunks()
    labels = table.column("labels").combine_chunks()
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(lengths):
        return Counter(), {}
    masks = problem_masks(ids.flatten().to_numpy(), labels.flatten().to_numpy(), lengths, eos_id, max_length)
    if "rejected_ids" in table.column_names:  # preference pairs: the rejected answer ends too
        rejected = table.column("rejected_ids").combine_chunks()
        counts = pc.list_value_length(rejected).to_numpy(zero_copy_only=False).astype(np.int64)
        example = np.repeat(np.arange(len(counts)), counts)
        is_eos = rejected.flatten().to_numpy() == (-1 if eos_id is None else eos_id)
        masks["rejected_without_eos"] = np.bincount(example, weights=is_eos, minlength=len(counts)) == 0
    row_ids = table.column("id").to_pylist()
    failed = Counter({name: int(mask.sum()) for name, mask in masks.items() if mask.any()})
    where = {name: [row_ids[i] for i in np.flatnonzero(masks[name])[:5]] for name in failed}
    return failed, where
