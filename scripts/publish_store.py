"""Publish content-keyed artifacts to the store (docs/store.md): each artifact's files are checked
against its manifest, copied into a temporary folder and renamed into place; an intact object
already there is kept, a corrupt one replaced. Prints one line per artifact.

    TUNEMAKE_STORE=/shared/tunemake-store python -m scripts.publish_store --artifacts @results/slices/X.json
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

from scripts.common.cli import fail, json_arg
from scripts.compiler.store import Artifact, StoreError, publish


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("TUNEMAKE_STORE"), help="default: $TUNEMAKE_STORE")
    parser.add_argument(
        "--artifacts", required=True, help="JSON list of {kind, key, base, names}, inline or @file"
    )
    args = parser.parse_args(argv)
    if not args.store:
        fail("no store named: --store PATH or TUNEMAKE_STORE (snakemake: --config store=PATH)")
    counts: Counter = Counter()
    for entry in json_arg(args.artifacts):
        artifact = Artifact(entry["kind"], entry["key"], entry["base"], tuple(entry["names"]))
        try:
            status = publish(args.store, artifact)
        except StoreError as exc:
            fail(str(exc))
        counts[status] += 1
        print(f"store: {status} {artifact.kind} {artifact.key}")
    print(f"store {args.store}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
