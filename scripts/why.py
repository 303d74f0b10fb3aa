"""Explain, in spec terms, what changed since each run was last built and which steps rerun.

The last-built state comes from the manifests themselves: each records its spec slice and
the files it read, and the manifest of any file is found from its path (`X.manifest.json`
beside `X`). A step reruns when its slice in the step table (scripts/compiler/steps.py, the
table the rules read too) differs from the one in its manifest, when its data sources
changed, or when a step it reads reruns.

    python -m scripts.why                      # every spec in specs/
    python -m scripts.why --specs specs/demo.yaml
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.common.files import sha256_file
from scripts.compiler.hub_sources import HubError, resolve_data
from scripts.compiler.spec import SpecError, canonical_json, load_specs
from scripts.compiler.steps import RUN_MANIFESTS, STANDS_FOR, downstream, manifest_of, run_steps, step_slices


def diff(old, new, prefix: str) -> list[str]:
    """Dotted `key: old -> new` lines between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new)):
            lines += diff(old.get(key, "(unset)"), new.get(key, "(unset)"), f"{prefix}.{key}")
        return lines
    if _records(old) and _records(new) and len(old) == len(new):  # data.sources[0].path: a -> b
        return [line for i, (a, b) in enumerate(zip(old, new)) for line in diff(a, b, f"{prefix}[{i}]")]
    if old == new:
        return []
    show = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731
    return [f"{prefix}: {show(old)} -> {show(new)}"]


def _records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def hub_changes(shards_manifest: dict, data: dict) -> list[str]:
    """`revision <old> -> <new>` (short commit shas) for each hub source whose resolved commit
    moved since the data was built (a new pin, or a branch that moved), or whose files changed."""
    try:
        now = resolve_data(data)
    except HubError as exc:
        return [f"data.sources[{exc.index}].hub.{exc.key}: {exc}"]
    lines = []
    old = [source.get("hub") for source in shards_manifest["details"]["sources"]]
    for index, (before, after) in enumerate(zip(old, now)):
        if not before or not after or before["repo"] != after["repo"]:
            continue  # a source added, removed or replaced: the spec lines say so
        where = f"data.sources[{index}].hub ({after['repo']})"
        if before["commit"] != after["commit"]:
            lines.append(f"{where}: revision {before['commit'][:12]} -> {after['commit'][:12]}")
        elif before["files"] != [{k: f[k] for k in ("path", "sha256")} for f in after["files"]]:
            lines.append(f"{where}: the files read at {after['commit'][:12]} changed")
    return lines


def read(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def last_built(results: Path, run: str) -> dict[str, dict]:
    """step -> a manifest of the run's current artifacts (one per step; per-shard steps give
    one of their shards), found by following each manifest's inputs to their manifests."""
    queue = [results / "runs" / run / f"{name}.manifest.json" for name in RUN_MANIFESTS]
    built, seen = {}, set()
    while queue:
        path = queue.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        manifest = read(path)
        if not manifest or "step" not in manifest:
            continue
        built.setdefault(manifest["step"], manifest)
        for item in manifest.get("inputs", []):
            source = Path(item["path"])
            found = source if source.name.endswith(".manifest.json") else manifest_of(source)
            if found and not another_runs(found, results, run):  # model.from_run reads one
                queue.append(found)
    return built


def another_runs(path: Path, results: Path, run: str) -> bool:
    """Whether `path` belongs to another run's folder (results/runs/<other>/...)."""
    try:
        parts = path.relative_to(results / "runs").parts
    except ValueError:
        return False
    return bool(parts) and parts[0] != run


def changed_sources(shards_manifest: dict) -> list[str]:
    return [
        source["path"]
        for source in shards_manifest["inputs"]
        if not Path(source["path"]).is_file() or sha256_file(source["path"]) != source["sha256"]
    ]


def reshard(data: dict, shards_manifest: dict, sample_file: str | None) -> tuple[list[str], bool]:
    """The shards that a re-shard of the current sources would replace, and whether the
    tokenizer sample would change: shard_data itself runs on the current sources into a scratch
    folder (no chunk cache), and its manifest and sample are compared with the built ones."""
    with tempfile.TemporaryDirectory(prefix="tunemake-why-") as scratch:
        out = Path(scratch)
        proc = subprocess.run(
            [sys.executable, "-m", "scripts.shard_data", "--spec-json", canonical_json(data)]
            + ["--shard-dir", str(out / "shards"), "--manifest", str(out / "shards.manifest.json")]
            + ["--tokenizer-sample", str(out / "sample.jsonl")],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            reason = proc.stderr.strip().splitlines()
            return [f"the data cannot be sharded: {reason[-1] if reason else proc.returncode}"], True
        new = {s["hash"] for s in json.loads((out / "shards.manifest.json").read_text())["details"]["shards"]}
        resampled = (out / "sample.jsonl").read_text()
    old = {s["hash"] for s in shards_manifest["details"]["shards"]}
    lines = [f"data shard {h} removed" for h in sorted(old - new)]
    lines += [f"data shard {h} added" for h in sorted(new - old)]
    sample = Path(sample_file) if sample_file else None
    same = bool(sample and sample.is_file() and sample.read_text() == resampled)
    if sample_file and not same:
        lines.append("tokenizer sample changed (a built model retrains its tokenizer)")
    return lines, not same


def derived(line: str, changes: list[str]) -> bool:
    """An `export.generation.<key>` line (the export's generation_config carries evaluate's
    decoding; no spec key of that name exists) when `evaluate.<key>` is already said."""
    prefix = "export.generation."
    return line.startswith(prefix) and "evaluate." + line.removeprefix(prefix) in changes


def explain_run(run, results: Path, memo: dict | None = None) -> list[str]:
    return analyse(run, results, {} if memo is None else memo)[0]


def parent_retrained(run, results: Path, memo: dict) -> str | None:
    """model.from_run: a line when the run it starts from is retrained (its tuned model is this
    run's base), else None. `memo`: run name -> (lines, steps that rerun), shared by the runs."""
    parent = run.parent
    if parent is None:
        return None
    if parent.name not in memo:
        memo[parent.name] = analyse(parent, results, memo)
    if "train_model" in memo[parent.name][1]:
        return (
            f"model.from_run: {parent.name} is retrained (its train_model reruns), so this run's base changes"
        )
    return None


def analyse(run, results: Path, memo: dict) -> tuple[list[str], set[str]]:
    """(the lines `why` prints for a run, the steps that rerun)."""
    built = last_built(results, run.name)
    if "train_model" not in built:
        return ["never trained: every step runs"], set(run_steps(run.sections))
    slices = step_slices(run.sections)
    changes, changed_steps = [], set()
    for step in run_steps(run.sections):
        if step not in built:
            changed_steps.add(step)  # never built (a format or a push added since)
            continue
        if step in STANDS_FOR:  # a target's own slice; the run's list is in the step it names
            continue
        section, now = slices[step]
        lines = [line for line in diff(built[step]["spec"], now, section) if not derived(line, changes)]
        if lines or diff(built[step]["spec"], now, section):
            changes += [line for line in lines if line not in changes]
            changed_steps.add(step)
    changed_steps |= {step for step, run_step in STANDS_FOR.items() if run_step in changed_steps}
    shards = built.get("shard_data")
    hub = hub_changes(shards, run.sections["data"]) if shards else []
    if hub:
        changes += hub
        changed_steps.add("shard_data")
    sources = changed_sources(shards) if shards and "shard_data" not in changed_steps else []
    holds = frozenset()
    if sources:
        changes += [f"data source {path} changed" for path in sources]
        sample = [i["path"] for i in built.get("base_model", {}).get("inputs", [])]
        lines, sample_changed = reshard(run.sections["data"], shards, sample[0] if sample else None)
        changes += lines
        changed_steps.add("shard_data")
        holds = frozenset() if sample_changed else frozenset({"base_model"})
    retrained = parent_retrained(run, results, memo)
    if retrained:
        changes.append(retrained)
        changed_steps.add("base_model")
    if not changes and not changed_steps:
        return ["up to date in spec terms (snakemake -n also checks code and file times)"], set()
    order = run_steps(run.sections)
    reruns = downstream(changed_steps, run.sections, holds)
    return [*changes, "reruns: " + ", ".join(s for s in order if s in reruns)], reruns


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="*", help="spec files (default: specs/*.yaml)")
    parser.add_argument("--results", default="results")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        runs = load_specs(args.specs or sorted(glob.glob("specs/*.yaml")))
    except SpecError as exc:
        print(f"error: invalid spec:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    memo: dict = {}
    for run in runs:
        print(f"{run.name}:")
        for line in explain_run(run, Path(args.results), memo):
            print(f"  {line}")


if __name__ == "__main__":
    main()
