"""Step manifests: what a step read, wrote and counted, validated against schemas/manifests/.

Every manifest has the same envelope (schema version, step, spec slice and its hash, input
manifests' hashes, output files with sizes and sha256, counts, timings, provenance); each
step's schema adds its own `counts` and `details`. Timings live in their own field so that
two runs can be compared byte for byte on everything else.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

from scripts.common.files import (
    atomic_write_json,
    describe_outputs,
    fault_point,
    read_json,
    sha256_file,
)
from scripts.compiler.spec import ROOT, SpecError, schema_errors, short_hash

SCHEMA_VERSION = 1


class ManifestError(RuntimeError):
    """A manifest that does not match its schema: a tunemake bug, never written to disk."""


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The workflow's git commit (with -dirty when the tree has changes), or None.
    `snakemake verify` sets TUNEMAKE_GIT_COMMIT in its clean copy (which has no .git) to the
    lock's commit, and only when the copy's code digest equals the lock's."""
    if os.environ.get("TUNEMAKE_GIT_COMMIT"):
        return os.environ["TUNEMAKE_GIT_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def provenance(environment_json: str | Path | None) -> dict:
    """Package versions and device from the environment step, plus the git commit."""
    env = read_json(environment_json) if environment_json else {}
    return {
        "packages": env.get("packages", {}),
        "device": env.get("device", {}).get("type", "unknown"),
        "python": env.get("python", "unknown"),
        "git_commit": git_commit(),
    }


def describe_inputs(paths) -> list[dict]:
    """Path and sha256 of each input; an entry already given as {"path", "sha256"} (a digest its
    writing step recorded, see recorded_sha256) is taken as it is."""
    return [p if isinstance(p, dict) else {"path": str(p), "sha256": sha256_file(p)} for p in paths]


def recorded_sha256(path: str | Path, manifest: dict) -> dict | str:
    """An input as describe_inputs takes it: with the sha256 that `manifest` (the step that wrote
    `path`) recorded for it, when its size is the recorded one and the manifest is not older
    than the file; else the path, hashed again."""
    path = Path(path)
    for entry in manifest.get("outputs", []):
        if Path(entry["path"]) == path and path.is_file():
            stat, written = path.stat(), manifest_time(path)
            if stat.st_size == entry["bytes"] and written is not None and written >= stat.st_mtime_ns:
                return {"path": str(path), "sha256": entry["sha256"]}
    return str(path)


def manifest_time(path: Path) -> int | None:
    """The modification time (ns) of the manifest beside `path`, or None."""
    try:
        return path.with_suffix(".manifest.json").stat().st_mtime_ns
    except OSError:
        return None


def build_manifest(
    step, spec, *, inputs=(), outputs=(), counts=None, details=None, timings=None, environment=None, run=None
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "step": step,
        "run": run,
        "spec": spec,
        "spec_hash": short_hash(spec),
        "inputs": describe_inputs(inputs),
        "outputs": describe_outputs(outputs),
        "counts": counts or {},
        "details": details or {},
        "timings": {k: round(v, 3) for k, v in (timings or {}).items()},
        "provenance": provenance(environment),
    }


def validate_manifest(manifest: dict) -> None:
    errors = schema_errors(manifest, f"manifests/{manifest['step']}.schema.json")
    if errors:
        raise ManifestError(
            f"{manifest['step']} manifest does not match its schema: " + "; ".join(m for _, m in errors)
        )


def write_manifest(path, step, spec, **fields) -> dict:
    """Build, validate and atomically write a manifest; returns it."""
    manifest = build_manifest(step, spec, **fields)
    validate_manifest(manifest)
    fault_point("manifest")  # reliability tests: killed after the outputs, before the manifest
    atomic_write_json(path, manifest)
    return manifest


__all__ = ["SpecError", "write_manifest", "validate_manifest", "provenance"]
