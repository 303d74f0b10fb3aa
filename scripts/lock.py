"""Write the lock file: the sha256 of every output of every step of every run, as built now.

    python -m scripts.lock --specs specs/demo.yaml --out tunemake.lock

Run by `snakemake lock` once every run is exported (docs/publish.md). The files are
hashed as they are on disk, so a file changed after its step wrote it shows up in `verify`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts.common.cli import fail
from scripts.common.files import atomic_write_text
from scripts.common.manifest import git_commit
from scripts.compiler.spec import SpecError, load_specs
from scripts.publish.lockfile import collect, render


def build_lock(root: Path, spec_files: list[str], environment_json: Path) -> dict:
    runs = {run.name: {"spec": run.spec_file, "sections": run.sections} for run in load_specs(spec_files)}
    environment = json.loads(environment_json.read_text())
    return collect(root, runs, {**environment, "git_commit": git_commit()})


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--specs", nargs="+", required=True)
    parser.add_argument("--environment", default="results/environment.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        lock = build_lock(Path("."), args.specs, Path(args.environment))
    except SpecError as exc:
        fail(f"invalid spec:\n{exc}")
    missing = sorted(path for path, source in lock["sources"].items() if source.get("missing"))
    if missing:
        fail(
            f"data source {missing[0]} is missing ({len(missing)} of {len(lock['sources'])} sources), "
            f"so {args.out} would record no sha256 for it: restore the file, or remove the source "
            "from the spec and rebuild (`snakemake export --cores 2`); then rerun `snakemake lock --cores 1`. Nothing was written."
        )
    atomic_write_text(args.out, render(lock))
    artifacts = lock["artifacts"]
    outputs = sum(len(a["outputs"]) for a in artifacts.values())
    print(f"{args.out}: {len(lock['runs'])} run(s), {len(artifacts)} step outputs sets, {outputs} files")


if __name__ == "__main__":
    main()
