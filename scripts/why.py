"""Explain, in spec terms, what changed since each run was last built and which steps rerun.

The last-built state comes from the manifests themselves (each records its spec slice and its
inputs' hashes), so nothing extra is stored: the run's train manifest leads to its token
shards, whose manifests lead to the tokenizer and the cleaned shards, and so on.

    python -m scripts.why                      # every spec in specs/
    python -m scripts.why --specs specs/demo.yaml
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from scripts.common.files import sha256_file
from scripts.common.spec import SpecError, load_specs

# Steps that rerun when a section changes (in DAG order); the model step reads data only
# when it builds its tokenizer from the training split.
DOWNSTREAM = {
    "data": ["shard_data", "clean_shard", "base_model", "tokenize_shard", "train_model"],
    "model": ["base_model", "tokenize_shard", "train_model"],
    "tokenize": ["tokenize_shard", "train_model"],
    "train": ["train_model"],
    "evaluate": ["evaluation"],
    "export.merge": ["merge_model"],
    "export.card": ["model_card"],
    "export.smoke": ["smoke_test"],
}
AFTER_TRAIN = ["evaluation", "merge_model", "model_card", "smoke_test"]  # they read the model


def diff(old, new, prefix: str) -> list[str]:
    """Dotted `key: old -> new` lines between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new)):
            lines += diff(old.get(key, "(unset)"), new.get(key, "(unset)"), f"{prefix}.{key}")
        return lines
    if old == new:
        return []
    show = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731
    return [f"{prefix}: {show(old)} -> {show(new)}"]


def read(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def last_built(results: Path, run: str) -> dict:
    """The spec slices and manifests the run's current artifacts were built from."""
    runs = results / "runs" / run
    built = {
        "train": read(runs / "train/manifest.json"),
        "evaluate": read(runs / "evaluate/manifest.json"),
        "merge": read(runs / "merged.manifest.json"),
        "smoke": read(runs / "smoke_test.json"),
    }
    train = built["train"]
    token_manifests = [
        read(Path(i["path"]).with_suffix(".manifest.json"))
        for i in (train or {}).get("inputs", [])
        if i["path"].endswith(".parquet")
    ]
    token = token_manifests[0] if token_manifests and token_manifests[0] else None
    built["tokenize"] = token
    for item in (token or {}).get("inputs", []):
        if item["path"].endswith("tokenizer.json"):
            built["model"] = read(Path(item["path"]).parent.parent / "manifest.json")
        elif item["path"].endswith(".jsonl"):
            built["data"] = read(Path(item["path"]).with_suffix(".manifest.json"))
            built["shards"] = read(Path(item["path"]).parent.parent / "shards.json")
    return built


def changed_shards(data: dict, shards_manifest: dict) -> list[str]:
    """Content hashes of the shards that a re-shard of the current sources would replace
    (read-only: the sources are read without shard_data's chunk cache)."""
    from scripts.common.records import SourceError
    from scripts.shard_data import read_all, shard_texts

    try:
        buckets, *_ = read_all(data, cache=None)
    except SourceError as exc:
        return [f"the data cannot be sharded: {exc}"]
    new = {digest for digest, _, _ in shard_texts(buckets)}
    old = {s["hash"] for s in shards_manifest["details"]["shards"]}
    return [f"data shard {h} removed" for h in sorted(old - new)] + [
        f"data shard {h} added" for h in sorted(new - old)
    ]


def explain_run(run, results: Path) -> list[str]:
    built = last_built(results, run.name)
    if not built["train"]:
        return ["never trained: every step runs"]
    changes, steps = [], []

    def compare(section, old_spec, new_spec, label, step_key):
        lines = diff(old_spec, new_spec, label)
        if lines:
            changes.extend(lines)
            steps.extend(DOWNSTREAM[step_key])

    for section in ("data", "model", "tokenize", "train", "evaluate"):
        manifest = built.get(section)
        if manifest:
            compare(section, manifest["spec"], run.sections[section], section, section)
    export = run.sections["export"]
    if built["merge"]:
        from scripts.merge_model import merge_spec

        compare("export", built["merge"]["spec"], merge_spec(export), "export", "export.merge")
    if built["smoke"]:
        smoke = {k: export[k] for k in built["smoke"]["spec"]}
        compare("export", built["smoke"]["spec"], smoke, "export", "export.smoke")
    shards = built.get("shards")
    if shards and not any(c.startswith("data.") for c in changes):
        for source in shards["inputs"]:
            if not Path(source["path"]).is_file() or sha256_file(source["path"]) != source["sha256"]:
                changes.append(f"data source {source['path']} changed")
                changes += changed_shards(run.sections["data"], shards)
                steps += (
                    DOWNSTREAM["data"]
                    if "build" in run.sections["model"]
                    else ["shard_data", "clean_shard", "tokenize_shard", "train_model"]
                )
                break
    if not changes:
        return ["up to date in spec terms (snakemake -n also checks code and file times)"]
    steps += (
        AFTER_TRAIN if "train_model" in steps else ["model_card", "smoke_test"]
    )  # the card shows the spec
    return [*changes, "reruns: " + ", ".join(s for s in STEP_ORDER if s in steps)]


STEP_ORDER = [
    "shard_data",
    "clean_shard",
    "base_model",
    "tokenize_shard",
    "train_model",
    "evaluation",
    "merge_model",
    "model_card",
    "smoke_test",
]


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
    for run in runs:
        print(f"{run.name}:")
        for line in explain_run(run, Path(args.results)):
            print(f"  {line}")


if __name__ == "__main__":
    main()
