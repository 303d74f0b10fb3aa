"""Pull a run's trained model (results/runs/<run>/train/ and train.manifest.json) from the store
object of its train key, each file checked against its recorded sha256 (docs/store.md). The
pull_train rule runs it in place of train_model when the store holds an intact copy.

    TUNEMAKE_STORE=/shared/tunemake-store python -m scripts.pull_train --run demo --key TRAIN_KEY
"""

from __future__ import annotations

import argparse
import os

from scripts.common.cli import fail
from scripts.compiler.store import StoreError, pull, train_artifact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("TUNEMAKE_STORE"), help="default: $TUNEMAKE_STORE")
    parser.add_argument("--run", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if not args.store:
        fail("no store named: --store PATH or TUNEMAKE_STORE (snakemake: --config store=PATH)")
    try:
        pull(args.store, train_artifact(args.run, args.key))
    except StoreError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
