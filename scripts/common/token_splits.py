"""Reading one split (train or validation) of a run's token shards, the same way in every step."""

from __future__ import annotations


def load_split(token_files, split: str, columns: list[str] | None = None):
    """One pyarrow table of the split's rows, ordered by record id (independent of shard names),
    with only `columns` when given."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in sorted(token_files)])
    table = table.filter(pc.equal(table["split"], split))
    table = table.take(pc.sort_indices(table, [("id", "ascending")]))
    return table.select(columns) if columns else table
