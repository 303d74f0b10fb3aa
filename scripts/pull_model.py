"""Pull one base model (results/models/<mkey>/model and its manifest) from the store, each file
checked against its recorded sha256 (docs/store.md). The pull_model rule runs it in place of
base_model when the store holds an intact copy.

    TUNEMAKE_STORE=/shared/tunemake-store python -m scripts.pull_model --mkey KEY
"""

from __future__ import annotations

import argparse
import os

from scripts.common.cli import fail
from scripts.compiler.store import StoreError, model_artifact, pull


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("TUNEMAKE_STORE"), help="default: $TUNEMAKE_STORE")
    parser.add_argument("--mkey", required=True)
    args = parser.parse_args(argv)
    if not args.store:
        fail("no store named: --store PATH or TUNEMAKE_STORE (snakemake: --config store=PATH)")
    try:
        pull(args.store, model_artifact(args.mkey))
    except StoreError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
