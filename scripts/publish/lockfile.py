"""The lock file (`tunemake.lock`): which bytes every step of every run produced.

`collect` walks each run's manifests (and, through their inputs, the shared data, model and
token manifests) and hashes every output file as it is on disk now; `render` writes that as
sorted YAML with no timings, so that two clean builds give the same text and the file diffs
cleanly in git. `scripts/verify.py` rebuilds in a clean copy and compares with `compare`;
`lock_checks.load` reads a lock back, checked.

Import-light (stdlib and PyYAML): the Snakefile's rules and the verify CLI share it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from scripts.common.files import sha256_file
from scripts.compiler.steps import RUN_MANIFESTS, STEP_ORDER, manifest_of

LOCK_VERSION = 1
HEADER = (
    "# tunemake.lock: the bytes every step of every run produced (sha256 of each output file).\n"
    "# Written by `snakemake lock`; `snakemake verify` rebuilds in a clean copy and compares.\n"
)
# Outputs whose bytes carry wall-clock timings: listed, never hashed (their manifests keep the
# timings apart for the same reason).
VOLATILE = {"train_model": ("log.jsonl",)}
# The files of the workflow's code: their digest says which code produced the artifacts,
# with or without git (an archive has no .git).
CODE_PARTS = ("Snakefile", "rules", "scripts", "schemas", "report")
_KEY = re.compile(r"^results/(?:data|models|tokens|audit)/([0-9a-f]{12})\b|^results/runs/([^/]+)/")


def files_under(root: Path, parts) -> list[Path]:
    """The files of `parts` (files or folders under root, caches left out), sorted by path."""
    files = []
    for part in parts:
        path = root / part
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def code_digest(root: Path) -> str:
    """sha256 over the code files' relative paths and contents."""
    listing = "".join(
        f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}\n" for p in files_under(root, CODE_PARTS)
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def reachable_manifests(root: Path, run: str) -> list[Path]:
    """Every manifest the run's artifacts were built from (all shards), relative to root."""
    queue = [Path("results/runs") / run / f"{name}.manifest.json" for name in RUN_MANIFESTS]
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        if path in seen or not (root / path).is_file():
            continue
        seen.add(path)
        manifest = json.loads((root / path).read_text())
        for item in manifest.get("inputs", []):
            source = Path(item["path"])
            found = source if source.name.endswith(".manifest.json") else manifest_of(root / source)
            if found is not None:
                queue.append(found.relative_to(root) if found.is_absolute() else found)
    return sorted(seen)


def describe_output(root: Path, step: str, path: str) -> dict:
    if Path(path).name in VOLATILE.get(step, ()):
        return {"volatile": "timings"}
    file = root / path
    if not file.is_file():
        return {"missing": True}
    return {"bytes": file.stat().st_size, "sha256": sha256_file(file)}


def artifact_entry(root: Path, manifest_path: Path) -> dict:
    manifest = json.loads((root / manifest_path).read_text())
    step = manifest["step"]
    match = _KEY.match(manifest_path.as_posix())
    entry = {"step": step, "key": next((g for g in match.groups() if g), None) if match else None}
    entry["spec_hash"] = manifest.get("spec_hash")
    # (shard_data lists its raw shards in details.shards)
    paths = [o["path"] for o in manifest.get("outputs", [])]
    paths += [shard["path"] for shard in manifest.get("details", {}).get("shards", []) if "path" in shard]
    entry["outputs"] = {path: describe_output(root, step, path) for path in paths}
    return entry


def environment_entry(environment: dict) -> dict:
    """From results/environment.json: what the lock records of the software and device."""
    return {
        "python": environment.get("python"),
        "packages": environment.get("packages", {}),
        "device": environment.get("device", {}),
    }


def rebuilt(root: Path, expected: dict) -> dict:
    """The same shape as a lock, for the artifacts of `expected` found under `root` (a clean
    copy where verify rebuilt them), hashed as they are there."""
    environment = json.loads((root / "results" / "environment.json").read_text())
    return {
        "code": {"sha256": code_digest(root)},
        "environment": environment_entry(environment),
        "artifacts": {
            p: artifact_entry(root, Path(p)) for p in expected["artifacts"] if (root / p).is_file()
        },
    }


def collect(root: Path, runs: dict[str, dict], environment: dict) -> dict:
    """The lock of the runs built under `root`: runs is {name: {"spec": file, "sections": ...}}."""
    artifacts, sources, run_entries = {}, {}, {}
    for name, run in sorted(runs.items()):
        paths = reachable_manifests(root, name)
        steps: dict[str, list[str]] = {}
        for path in paths:
            entry = artifacts.setdefault(path.as_posix(), artifact_entry(root, path))
            steps.setdefault(entry["step"], []).append(path.as_posix())
            if entry["step"] == "shard_data":
                for item in json.loads((root / path).read_text())["inputs"]:
                    sources[item["path"]] = describe_output(root, "", item["path"])
        sections = run["sections"]
        run_entries[name] = {
            "spec": run["spec"],
            "seeds": {
                "model": sections["model"].get("build", {}).get("seed")
                if "build" in sections["model"]
                else None,
                "train": sections["train"].get("seed"),
                "evaluate": sections["evaluate"].get("seed"),
            },
            "threads": sections["train"].get("threads"),
            "steps": {s: steps[s] for s in STEP_ORDER if s in steps},
        }
    return {
        "lock_version": LOCK_VERSION,
        "code": {"sha256": code_digest(root), "git_commit": environment.get("git_commit")},
        "environment": environment_entry(environment),
        "sources": sources,
        "runs": run_entries,
        "artifacts": artifacts,
    }


def render(lock: dict) -> str:
    return HEADER + yaml.safe_dump(lock, sort_keys=True, default_flow_style=False, width=1000)


def step_rank(step: str) -> int:
    return STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER)


def compare(expected: dict, got: dict, steps: set[str]) -> list[dict]:
    """One row per output of the given steps, in DAG order: step, file, expected, got, match
    (None for a volatile output, which is listed but not compared)."""
    rows = []
    items = sorted(expected["artifacts"].items(), key=lambda kv: (step_rank(kv[1]["step"]), kv[0]))
    for manifest_path, entry in items:
        if entry["step"] not in steps:
            continue
        built = got["artifacts"].get(manifest_path, {"outputs": {}})["outputs"]
        for path, want in sorted(entry["outputs"].items()):
            have = built.get(path, {"missing": True})
            match = None if "volatile" in want else want == have
            rows.append({"step": entry["step"], "file": path, "expected": want, "got": have, "match": match})
    return rows


def environment_differences(expected: dict, got: dict) -> list[str]:
    """`what: lock -> here` lines for the provenance that differs (packages, python, device, code)."""
    lines = []
    old, new = expected["environment"], got["environment"]
    for name in sorted(set(old["packages"]) | set(new["packages"])):
        a, b = old["packages"].get(name, "(absent)"), new["packages"].get(name, "(absent)")
        if a != b:
            lines.append(f"package {name}: {a} in the lock, {b} here")
    if old["python"] != new["python"]:
        lines.append(f"python: {old['python']} in the lock, {new['python']} here")
    for key in sorted(set(old["device"]) | set(new["device"])):
        if old["device"].get(key) != new["device"].get(key):
            lines.append(f"device {key}: {old['device'].get(key)} in the lock, {new['device'].get(key)} here")
    if expected["code"]["sha256"] != got["code"]["sha256"]:
        lines.append("workflow code (Snakefile, rules, scripts, schemas, report) differs from the lock's")
    return lines
