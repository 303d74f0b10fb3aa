"""Comparing a lock with files: the data sources, the outputs as they are on disk (verify_local),
and the table verify and verify_local print."""

from __future__ import annotations

from pathlib import Path

from scripts.common.files import sha256_file
from scripts.publish.lockfile import compare, describe_output


def source_differences(lock: dict, root: Path) -> list[str]:
    lines = []
    for path, want in sorted(lock["sources"].items()):
        file = root / path
        if not file.is_file():
            lines.append(f"data source {path}: missing here (the lock has sha256 {want.get('sha256')})")
        elif sha256_file(file) != want.get("sha256"):
            lines.append(
                f"data source {path}: sha256 {sha256_file(file)} here, {want.get('sha256')} in the lock"
            )
    return lines


def short(value: dict) -> str:
    if "volatile" in value:
        return f"({value['volatile']})"
    return "missing" if "missing" in value else value["sha256"][:16]


def table(rows: list[dict]) -> str:
    lines = ["step | file | expected sha256 | got | match", "---|---|---|---|---"]
    for row in rows:
        match = {True: "yes", False: "NO", None: "not compared"}[row["match"]]
        lines.append(
            f"{row['step']} | {row['file']} | {short(row['expected'])} | {short(row['got'])} | {match}"
        )
    return "\n".join(lines)


def local_rows(lock: dict, root: Path) -> list[dict]:
    """compare's rows for every locked output, as the file is under `root` now."""
    got = {
        path: {"outputs": {out: describe_output(root, entry["step"], out) for out in entry["outputs"]}}
        for path, entry in lock["artifacts"].items()
    }
    steps = {entry["step"] for entry in lock["artifacts"].values()}
    return compare(lock, {"artifacts": got}, steps)


def local_verdict(rows: list[dict], sources: list[str], steps: list[str], locked_sources: int):
    """(whether the files here are the locked ones, the closing message) for verify_local;
    `sources`: a line per data source that differs."""
    bad = [row for row in rows if row["match"] is False]
    compared = sum(1 for row in rows if row["match"] is not None)
    fix = (
        "A file changed after it was built: delete it and run `snakemake export --cores 2` to rebuild it; "
        "a build newer than the lock: rerun `snakemake lock --cores 1`"
    )
    if sources:
        return False, (
            f"verify_local: FAILED: {len(sources)} of {locked_sources} data source(s) differ from the "
            f"lock; the first: {sources[0]}. Restore the source the lock was written from, or rebuild "
            "(`snakemake export --cores 2`) and rerun `snakemake lock --cores 1`"
        )
    if bad:
        row = bad[0]
        got = "is missing here" if "missing" in row["got"] else f"has sha256 {short(row['got'])} here"
        return False, (
            f"verify_local: FAILED: {len(bad)} of {compared} files differ from the lock; the first is at "
            f"step {row['step']}: {row['file']} {got}, the lock says {short(row['expected'])}. {fix}"
        )
    return True, (
        f"verify_local: OK: {compared} files of {len(steps)} steps and {locked_sources} data source(s) "
        f"match the lock ({len(rows) - compared} not compared); nothing was rebuilt"
    )
