"""Rebuild what the lock file names in a clean copy of the workflow and compare, file by file.

    python -m scripts.verify --lock tunemake.lock                      # every step
    python -m scripts.verify --lock tunemake.lock --until tokenize_shard   # data only, cheaper
    python -m scripts.verify --lock tunemake.lock --keep      # keep the clean copy (path printed)

Run by `snakemake verify` (`--config verify_until=<step>`, `verify_keep=true`); `snakemake
verify_local` (scripts/verify_local.py) rebuilds nothing, it re-hashes the files here. The copy
holds the workflow code, the locked specs and their data sources, nothing of results/;
Snakemake builds there exactly the manifests the lock lists for the steps checked, then the
copy's own lock is compared with this one. Prints a table (step, file, expected sha256, got, match) and exits 1 on a mismatch,
naming the first step whose outputs differ and what differs in the provenance (packages,
python, device, code); a lock whose environment differs fails too, even if every file matches.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.common.cli import fail
from scripts.compiler.steps import STEP_ORDER
from scripts.publish.comparison import short, source_differences, table
from scripts.publish.lock_checks import LockError, load
from scripts.publish.lockfile import code_digest, compare, environment_differences, rebuilt

# What a clean copy needs besides the specs and data sources (profiles/default: the same
# command-line defaults as here; tasks/: the local lm-eval tasks a spec may score).
COPY_PARTS = ("Snakefile", "rules", "scripts", "schemas", "report", "profiles", "tasks", "environment.yml")
NOT_REBUILT = {"push_to_hub"}  # a hub push is not rebuilt: it would publish again


def checked_steps(until: str) -> list[str]:
    if until not in STEP_ORDER:
        guess = difflib.get_close_matches(until, STEP_ORDER, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"one of: {', '.join(STEP_ORDER)}"
        fail(f"verify_until: unknown step '{until}'; {hint}")
    return [s for s in STEP_ORDER[: STEP_ORDER.index(until) + 1] if s not in NOT_REBUILT]


def make_copy(lock: dict, root: Path, dest: Path) -> None:
    for part in COPY_PARTS:
        src = root / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / part)
    files = [run["spec"] for run in lock["runs"].values()] + list(lock["sources"])
    for path in files:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, dest / path)


def rebuild_command(lock: dict, steps: list[str], cores: int) -> list[str]:
    """Snakemake's command line in the copy: what the lock lists for `steps`, for the locked
    runs' spec files wherever they lie (examples/ too), and only those."""
    # `data` (every run's tokens and audit: the per-shard steps hang off a checkpoint, so their
    # manifests cannot be asked for directly), then each run's own manifests of the steps checked
    # (the data sources' step alone: its manifests, the checkpoint's outputs, are enough)
    if steps == ["shard_data"]:
        targets = sorted(p for p, a in lock["artifacts"].items() if a["step"] == "shard_data")
    else:
        targets = ["data"] + sorted(
            p for p, a in lock["artifacts"].items() if a["step"] in steps and p.startswith("results/runs/")
        )
    specs = ",".join(sorted({run["spec"] for run in lock["runs"].values()}))
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), *targets, "--config", f"specs={specs}"]


def rebuild(lock: dict, copy: Path, steps: list[str], cores: int) -> subprocess.CompletedProcess:
    """Snakemake in the copy, on what the lock lists for `steps`."""
    env = dict(os.environ)
    if code_digest(copy) == lock["code"]["sha256"] and lock["code"].get("git_commit"):
        env["TUNEMAKE_GIT_COMMIT"] = lock["code"]["git_commit"]  # the same code: the same cards
    with open(copy / "verify.log", "w") as log:
        return subprocess.run(
            rebuild_command(lock, steps, cores), cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lock", required=True)
    parser.add_argument("--until", default=STEP_ORDER[-1], help="the last step to rebuild and compare")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the clean copy (its path is printed)")
    return parser.parse_args(argv)


def verdict(rows: list[dict], provenance: list[str], steps: list[str]) -> tuple[bool, str]:
    """(whether the rebuild matches the lock, the closing message)."""
    bad = [row for row in rows if row["match"] is False]
    if bad:
        first = bad[0]
        why = (
            "What differs in its provenance:\n  " + "\n  ".join(provenance)
            if provenance
            else "Its provenance matches the lock (packages, python, device, code): a file was changed "
            "after its step wrote it, or the step is not deterministic here."
        )
        return False, (
            f"verify: FAILED: {len(bad)} of {len(rows)} files differ; the first is at step {first['step']}: "
            f"{first['file']} has sha256 {short(first['got'])}, the lock says {short(first['expected'])}.\n"
            + why
        )
    if provenance:
        return False, (
            "verify: FAILED: every file matches, but the environment differs from the lock's:\n  "
            + "\n  ".join(provenance)
        )
    compared = sum(1 for row in rows if row["match"])
    return True, (
        f"verify: OK: {compared} files of {len(steps)} steps match the lock ({len(rows) - compared} not compared)"
    )


def main(argv=None):
    args = parse_args(argv)
    steps = checked_steps(args.until)
    try:
        lock = load(args.lock, Path("."))
    except LockError as exc:
        fail(str(exc))
    locked = {step for run in lock["runs"].values() for step in run["steps"]}
    steps = [step for step in steps if step in locked]  # the steps the locked runs have
    sources = source_differences(lock, Path("."))
    if sources:
        fail(
            "verify: the data sources differ from the lock's, so nothing was rebuilt:\n  "
            + "\n  ".join(sources)
        )
    copy = Path(tempfile.mkdtemp(prefix="tunemake-verify-"))
    print(f"verify: rebuilding {', '.join(steps)} in a clean copy, {copy} (log: {copy / 'verify.log'})")
    try:
        make_copy(lock, Path("."), copy)
        proc = rebuild(lock, copy, steps, args.cores)
        if proc.returncode != 0:
            tail = (copy / "verify.log").read_text(errors="replace")[-3000:]
            fail(f"verify: the rebuild failed (exit {proc.returncode}); the end of its log:\n{tail}")
        got = rebuilt(copy, lock)
    finally:
        if not args.keep:
            shutil.rmtree(copy, ignore_errors=True)
    rows = compare(lock, got, set(steps))
    print(table(rows))
    ok, message = verdict(rows, environment_differences(lock, got), steps)
    print(message, file=sys.stdout if ok else sys.stderr)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
