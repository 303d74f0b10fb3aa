"""Are the files here the locked ones? Re-hash the data sources and every output the lock file
lists, as they are under results/ now, and name the first that differs; nothing is rebuilt.

    python -m scripts.verify_local --lock tunemake.lock

Run by `snakemake verify_local` (the question `dvc status` answers for DVC); `snakemake verify`
answers the other one, whether a clean rebuild gives these bytes. Prints the rows that differ
(step, file, expected sha256, got) and exits 1 naming the first, in DAG order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.common.cli import fail
from scripts.publish.comparison import local_rows, local_verdict, source_differences, table
from scripts.publish.lock_checks import LockError, load


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lock", required=True)
    args = parser.parse_args(argv)
    try:
        lock = load(args.lock, Path("."))
    except LockError as exc:
        fail(str(exc))
    rows = local_rows(lock, Path("."))
    sources = source_differences(lock, Path("."))
    bad = [row for row in rows if row["match"] is False]
    if bad:
        print(table(bad))
    steps = sorted({entry["step"] for entry in lock["artifacts"].values()})
    ok, message = local_verdict(rows, sources, steps, len(lock["sources"]))
    print(message, file=sys.stdout if ok else sys.stderr)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
