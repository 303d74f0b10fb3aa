"""What a lock file read from disk must hold before `verify` or `archive` trusts it: its shape
(the keys `snakemake lock` writes, each of the right type, at least one locked step) and every
path in it (data sources, spec files, manifests, outputs) relative and inside the workflow
folder. A lock is input like any other: a hand-edited or corrupted one is refused with one line
(the file, the key, what is wrong, the fix), before anything is copied or packed.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from scripts.publish.lockfile import LOCK_VERSION

REWRITE = "rerun `snakemake lock --cores 1` (after `snakemake export --cores 2`) to write it again"
# the keys of a lock, with what each holds (said when one is missing or of the wrong type)
SHAPE = {
    "code": "the workflow code's digest (code.sha256)",
    "environment": "the packages, python and device of the build",
    "sources": "the data sources' sizes and sha256, by path",
    "runs": "each run's spec file, seeds and steps",
    "artifacts": "each step manifest's output files with their sha256",
}


class LockError(ValueError):
    """A lock file that cannot be trusted; the message is the one line the user sees."""


def load(lock_file: str | Path, root: Path) -> dict:
    """The lock in `lock_file`, checked (shape and paths, against the workflow folder `root`)."""
    try:
        text = Path(lock_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockError(f"{lock_file}: no such file; {REWRITE}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"{lock_file}: cannot be read ({exc}); {REWRITE}") from None
    try:
        lock = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise LockError(
            f"{lock_file}{where}: not valid YAML ({problem}); expected the YAML file `snakemake lock` "
            f"writes; {REWRITE}"
        ) from None
    check_shape(lock, lock_file)
    check_paths(lock, lock_file, root)
    return lock


def _expect(value, kind: type, lock_file, key: str, what: str) -> None:
    if value is None:
        raise LockError(f"{lock_file}: no `{key}` key; expected {what}; {REWRITE}")
    if not isinstance(value, kind):
        name = "a mapping" if kind is dict else f"a {kind.__name__}"
        raise LockError(
            f"{lock_file}: `{key}` is a {type(value).__name__}, expected {name} ({what}); {REWRITE}"
        )


def check_shape(lock, lock_file) -> None:
    """The keys and types verify and archive read, and at least one locked step."""
    if not isinstance(lock, dict):
        raise LockError(
            f"{lock_file}: holds a {type(lock).__name__}, expected a mapping with lock_version, "
            f"{', '.join(SHAPE)}; {REWRITE}"
        )
    if lock.get("lock_version") != LOCK_VERSION:
        raise LockError(
            f"{lock_file}: `lock_version` is {lock.get('lock_version')!r}, expected {LOCK_VERSION} "
            f"(a tunemake lock file of this version); {REWRITE}"
        )
    for key, what in SHAPE.items():
        _expect(lock.get(key), dict, lock_file, key, what)
    _expect(lock["code"].get("sha256"), str, lock_file, "code.sha256", SHAPE["code"])
    environment = lock["environment"]
    _expect(environment.get("python"), str, lock_file, "environment.python", "the python version")
    for key in ("packages", "device"):
        _expect(environment.get(key), dict, lock_file, f"environment.{key}", SHAPE["environment"])
    for path, entry in lock["sources"].items():
        _expect(entry, dict, lock_file, f"sources.{path}", "the source's bytes and sha256")
    for name, run in lock["runs"].items():
        _expect(run, dict, lock_file, f"runs.{name}", SHAPE["runs"])
        _expect(run.get("spec"), str, lock_file, f"runs.{name}.spec", "the run's spec file")
        _expect(run.get("steps"), dict, lock_file, f"runs.{name}.steps", "the run's step manifests")
    for path, entry in lock["artifacts"].items():
        _expect(entry, dict, lock_file, f"artifacts.{path}", SHAPE["artifacts"])
        _expect(entry.get("step"), str, lock_file, f"artifacts.{path}.step", "the step's name")
        _expect(entry.get("outputs"), dict, lock_file, f"artifacts.{path}.outputs", "its files")
        for output, described in entry["outputs"].items():
            _expect(described, dict, lock_file, f"artifacts.{path}.outputs.{output}", "bytes and sha256")
    if not lock["runs"] or not any(run["steps"] for run in lock["runs"].values()):
        raise LockError(
            f"{lock_file}: `runs` lists no steps, so there is nothing to check or rebuild; build the "
            "runs first (`snakemake export --cores 2`), then rerun `snakemake lock --cores 1`"
        )


def locked_paths(lock: dict):
    """(where in the lock, path) for every path verify copies or archive packs or reads."""
    for path in lock["sources"]:
        yield "a `sources` key", path
    for name, run in lock["runs"].items():
        yield f"`runs.{name}.spec`", run["spec"]
        for step, manifests in run["steps"].items():
            for path in manifests if isinstance(manifests, list) else [manifests]:
                yield f"`runs.{name}.steps.{step}`", path
    for manifest, entry in lock["artifacts"].items():
        yield "an `artifacts` key", manifest
        for path in entry["outputs"]:
            yield f"an output of `artifacts.{manifest}`", path


def outside_reason(path, root: Path) -> str | None:
    """Why `path` is not a relative path inside `root` (None when it is)."""
    if not isinstance(path, str) or not path.strip():
        return "is not a file path"
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith("\\"):
        return "is an absolute path"
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        return "climbs out of the workflow folder with '..'"
    top = root.resolve()
    target = (root / path).resolve()
    if target != top and top not in target.parents:
        return f"leads out of the workflow folder through a symbolic link (to {target})"
    return None


def check_paths(lock: dict, lock_file, root: Path) -> None:
    for where, path in locked_paths(lock):
        why = outside_reason(path, root)
        if why:
            raise LockError(
                f"{lock_file}: {where} {path!r} {why}; a lock names only files inside the workflow "
                f"folder, relative to it: remove that entry, or {REWRITE}"
            )
