"""Token columns of a shard assembled with numpy (used by tokenize_shard for records that are
one sequence each: text, prompt/completion and chat; preference pairs and KTO records take the
per-record path). Produces exactly the rows, values and counts of the per-record assembly, as
arrow arrays, in a fraction of its time (no Python list per example).
"""

from __future__ import annotations

import sys
from collections import Counter
from itertools import chain, repeat

IGNORE = -100


class _NoPandas:
    """An import finder that refuses pandas (see without_pandas)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not used by this step", name=name)
        return None


def without_pandas() -> None:
    """Keep pandas out of this process: pyarrow imports it on the first array it builds, only to
    check whether its input is a DataFrame (0.3-0.5 s, more than a small shard's tokenizing).
    For the data steps' own processes, which never use pandas; call before pyarrow is used."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def segment_arrays(plans: list, encoded: list, eos_for: list):
    """Flat token ids plus, per segment, its length, record, trained flag and prompt flag;
    `eos_for[r]`: the ids appended to record r (EOS, trained, or nothing)."""
    import numpy as np

    pieces, lengths, records, trained, in_prompt = [], [], [], [], []
    for r, (plan, ids_per_segment) in enumerate(zip(plans, encoded)):
        for (_, is_trained, prompt_part, _), ids in zip(plan[0], ids_per_segment):
            pieces.append(ids)
            lengths.append(len(ids))
            records.append(r)
            trained.append(is_trained)
            in_prompt.append(prompt_part)
        if eos_for[r]:
            pieces.append(eos_for[r])
            lengths += [len(eos_for[r])]
            records.append(r)
            trained.append(True)
            in_prompt.append(False)
    lengths = np.array(lengths, np.int64)
    flat = np.fromiter(chain.from_iterable(pieces), np.int32, count=int(lengths.sum()))
    return flat, lengths, np.array(records, np.int64), np.array(trained, bool), np.array(in_prompt, bool)


def prompt_completion_arrays(prompts: list, completions: list, eos: list[int], loss_on_all: bool):
    """segment_arrays for prompt/completion records (prompt, completion, EOS), without plans."""
    import numpy as np

    rows = len(prompts)
    seg_len = np.column_stack(
        [np.fromiter(map(len, prompts), np.int64, rows), np.fromiter(map(len, completions), np.int64, rows)]
        + [np.full(rows, len(eos), np.int64)]
    ).ravel()
    pieces = chain.from_iterable(zip(prompts, completions, repeat(eos, rows)))
    flat = np.fromiter(chain.from_iterable(pieces), np.int32, count=int(seg_len.sum()))
    seg_rec = np.repeat(np.arange(rows), 3)
    return (
        flat,
        seg_len,
        seg_rec,
        np.tile([loss_on_all, True, True], rows),
        np.tile([True, False, False], rows),
    )


def assemble_arrays(plans: list, encoded: list, eos_for: list, tok: dict, segments=None):
    """(input_ids, labels as arrow list arrays, prompt_length, kept row indices, dropped, truncated);
    `segments`: segment_arrays' result when already built."""
    import numpy as np
    import pyarrow as pa

    rows = len(plans)
    segments = segments or segment_arrays(plans, encoded, eos_for)
    flat, seg_len, seg_rec, seg_trained, seg_prompt = segments
    labels = np.where(np.repeat(seg_trained, seg_len), flat, np.int32(IGNORE)).astype(np.int32)
    lengths = np.bincount(seg_rec, weights=seg_len, minlength=rows).astype(np.int64)
    prompt = np.bincount(seg_rec, weights=seg_len * seg_prompt, minlength=rows).astype(np.int64)
    limit, dropped = tok["max_length"], Counter()
    overlong = lengths > limit
    keep = np.ones(rows, bool)
    truncated = 0
    if overlong.any():
        if tok["overlong"] == "drop":
            keep &= ~overlong
            dropped["too_many_tokens"] = int(overlong.sum())
        else:
            truncated = int(overlong.sum())
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(flat)) - np.repeat(starts, lengths)
    token_row = np.repeat(np.arange(rows), lengths)
    within = position < limit
    labelled = np.bincount(token_row[within], weights=labels[within] != IGNORE, minlength=rows)
    no_labels = keep & (labelled == 0)
    if no_labels.any():
        dropped["no_labels"] = int(no_labels.sum())
        keep &= ~no_labels
    tokens = within & keep[token_row]
    new_lengths = np.minimum(lengths, limit)[keep]
    offsets = pa.array(np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int32))
    ids_array = pa.ListArray.from_arrays(offsets, pa.array(flat[tokens]))
    labels_array = pa.ListArray.from_arrays(offsets, pa.array(labels[tokens]))
    prompt_length = np.minimum(prompt, limit)[keep].astype(np.int32)
    return ids_array, labels_array, prompt_length, np.flatnonzero(keep), dropped, truncated


def token_table(columns: dict):
    """The token table of tokenize_records' columns."""
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    types = {
        "input_ids": ids,
        "labels": ids,
        "rejected_ids": ids,
        "prompt_length": pa.int32(),
        "label": pa.bool_(),
    }
    table = pa.table(
        {
            name: values
            if isinstance(values, pa.Array)
            else pa.array(values, type=types.get(name, pa.string()))
            for name, values in columns.items()
        }
    )
    return table


def write_parquet(table, path: str):
    """Write the token table atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.common.files import atomic_write_bytes

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def prompt_completion_columns(records: list[dict], tokenizer, tok: dict, eos: list[int]):
    """array_columns for prompt/completion records: the plan of each is known (prompt with the
    tokenizer's special tokens, completion without, EOS), so no per-record plan is built."""
    prompts = [r["prompt"] for r in records]
    completions = [r["completion"] for r in records]
    segments = prompt_completion_arrays(
        tokenizer.encode(prompts, True), tokenizer.encode(completions, False), eos, tok["loss_on"] == "all"
    )
    ids, labels, prompt_length, kept, dropped, truncated = assemble_arrays(records, None, None, tok, segments)
    kept = kept.tolist()
    columns = {"id": [records[i]["id"] for i in kept], "split": [records[i]["split"] for i in kept]}
    columns |= {"input_ids": ids, "labels": labels, "prompt_length": prompt_length}
    columns |= {"prompt": [prompts[i] for i in kept], "reference": [completions[i] for i in kept]}
    return columns, dropped, truncated
