"""Pull a run's merged model (results/runs/<run>/merged/ and merged.manifest.json) from the store
object of its merged key, each file checked against its recorded sha256 (docs/store.md). The
pull_merged rule runs it in place of merge_model when the store holds an intact copy.

    TUNEMAKE_STORE=/shared/tunemake-store python -m scripts.pull_merged --run demo --key MERGED_KEY
"""

from __future__ import annotations

import argparse
import os

from scripts.common.cli import fail
from scripts.compiler.store import StoreError, merged_artifact, pull


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("TUNEMAKE_STORE"), help="default: $TUNEMAKE_STORE")
    parser.add_argument("--run", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if not args.store:
        fail("no store named: --store PATH or TUNEMAKE_STORE (snakemake: --config store=PATH)")
    try:
        pull(args.store, merged_artifact(args.run, args.key))
    except StoreError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
