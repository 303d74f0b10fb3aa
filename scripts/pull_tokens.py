"""Pull one token shard (results/tokens/<tkey>/<shard>.parquet and its manifest) from the store,
each file checked against its recorded sha256 (docs/store.md). The pull_tokens rule runs it in
place of tokenize_shard when the store holds an intact copy.

    TUNEMAKE_STORE=/shared/tunemake-store python -m scripts.pull_tokens --tkey KEY --shard HASH
"""

from __future__ import annotations

import argparse
import os

from scripts.common.cli import fail
from scripts.compiler.store import StoreError, pull, tokens_artifact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("TUNEMAKE_STORE"), help="default: $TUNEMAKE_STORE")
    parser.add_argument("--tkey", required=True)
    parser.add_argument("--shard", required=True)
    args = parser.parse_args(argv)
    if not args.store:
        fail("no store named: --store PATH or TUNEMAKE_STORE (snakemake: --config store=PATH)")
    try:
        pull(args.store, tokens_artifact(args.tkey, args.shard))
    except StoreError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
