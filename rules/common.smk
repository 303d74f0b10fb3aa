"""Spec compiler glue: every spec in specs/ (or --config specs=a.yaml,b.yaml) becomes runs,
each run's sections become content keys, and the functions below give the per-run rules their
paths and their parameters (each step's slice from the step table, scripts/compiler/steps.py, as
canonical JSON). The content-keyed artifacts' functions are in keyed_params.smk, the registry of
runs working in this folder in run_registry.smk. Imports nothing heavy, and nothing from
scripts/ outside scripts/compiler/."""

import glob
import hashlib
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from scripts.compiler.artifacts import shared_artifacts
from scripts.compiler.spec import SpecError, canonical_json, load_specs
from scripts.compiler.steps import (
    PIECE_FOLDER,
    differing_values,
    export_pieces,
    step_slices,
)
from scripts.compiler.tracker_choice import TrackerError, choose_trackers


def _spec_files():
    chosen = config.get("specs")
    if chosen:
        return chosen.split(",") if isinstance(chosen, str) else list(chosen)
    return sorted(glob.glob("specs/*.yaml"))


def _refuse(message):
    """Stop at DAG-build time with the message alone (a WorkflowError would add a header and
    a stray `File ".../rules/common.smk"` line)."""
    print(message, file=sys.stderr)
    sys.exit(1)


SPEC_FILES = _spec_files()
try:
    RUNS = {run.name: run for run in load_specs(SPEC_FILES)}
except SpecError as exc:
    _refuse(f"invalid spec:\n{exc}")

ENV = "results/environment.json"
LOCK = (
    "tunemake.lock"  # beside the specs: `snakemake lock`, checked by `snakemake verify`
)
CONDA_ENV = "../environment.yml"  # used with --sdm conda; relative to rules/
# Jobs run `python` from the environment Snakemake runs in, so `.venv/bin/snakemake` works
# without activating the venv; inside a conda or container environment, that one's `python`.
_ISOLATED = {"CONDA", "APPTAINER"} & {
    m.name for m in workflow.deployment_settings.deployment_method
}
if not (_ISOLATED or config.get("container")):
    shell.prefix(
        f"set -euo pipefail; export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH; "
    )

# --sdm apptainer --config container=docker://IMAGE runs every job inside IMAGE (an image
# with requirements.txt installed); a runtime choice like the profile, so not in the specs.
if config.get("container"):

    container: config["container"]


KEYS = {name: run.keys for name, run in RUNS.items()}
SLICES = {
    name: {s: v for s, (_, v) in step_slices(run.sections).items()}
    for name, run in RUNS.items()
}
# shared artifacts, content key -> (the slice its step reads, upstream keys): DATA, MODEL,
# TOKENS, AUDIT and REFERENCE (rules/keyed_params.smk)
DATA, MODEL, TOKENS, AUDIT, REFERENCE = shared_artifacts(RUNS).values()


wildcard_constraints:
    dkey="[0-9a-f]{12}",
    mkey="[0-9a-f]{12}",
    tkey="[0-9a-f]{12}",
    akey="[0-9a-f]{12}",
    rkey="[0-9a-f]{12}",
    page="evaluation|model_card|benchmarks",
    shard="[0-9a-f]{16}",
    run="[A-Za-z0-9][A-Za-z0-9._=+-]*",


def slice_file(value):
    """A params value for a spec slice: `@results/slices/<sha256>.json`, the slice's canonical
    JSON written once under its own hash. Scripts read it (scripts.common.cli.json_arg), so no
    spec size reaches the command-line length limit; an edit changes the path, and with it the
    params Snakemake compares, so the step reruns exactly as before."""
    text = canonical_json(value)
    path = Path("results/slices") / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return f"@{path}"


def tokens_file(wildcards, input):
    """params: the token shards as a JSON list file (`@results/slices/<sha256>.json`); 4096
    shard paths on the command line would pass the shell's 128 KB limit."""
    return slice_file(list(input.tokens))


def run_base(wildcards):
    return f"results/models/{KEYS[wildcards.run]['model']}/model"


def run_base_manifest(wildcards):
    return f"results/models/{KEYS[wildcards.run]['model']}/model.manifest.json"


def run_slice(step):
    """A params function giving the slice of the step table that `step` reads, as canonical JSON."""

    def params(wildcards):
        return slice_file(SLICES[wildcards.run][step])

    params.__name__ = f"{step}_slice"
    return params


def run_method(wildcards):
    return RUNS[wildcards.run].sections["train"]["method"]


def run_threads(wildcards):
    return RUNS[wildcards.run].sections["train"]["threads"]


def run_work_dir(wildcards):
    return f"results/work/train/{KEYS[wildcards.run]['train']}"


def run_spec_json(wildcards):
    """The whole compiled spec of a run (the model card documents it)."""
    return slice_file(RUNS[wildcards.run].sections)


def all_runs(pattern):
    return [pattern.format(run=name) for name in RUNS]


# export: the pieces of a run's export folder (by the step table), its data manifest, the runs
# that push to a hub
def run_export_pieces(wildcards):
    return [
        f"results/runs/{wildcards.run}/{PIECE_FOLDER[step]}"
        for step in export_pieces(RUNS[wildcards.run].sections["export"])
    ]


def run_gguf_manifest(wildcards):
    """The GGUF parity manifest the model card quotes, when the spec asks for GGUF files."""
    if "gguf" not in RUNS[wildcards.run].sections["export"]:
        return []
    return f"results/runs/{wildcards.run}/gguf.manifest.json"


def run_data_manifest(wildcards):
    return f"results/data/{KEYS[wildcards.run]['data']}/raw.manifest.json"


# Experiment trackers (rules/track.smk): a runtime choice, checked before any job runs; no key.
try:
    TRACKERS = choose_trackers(config.get("trackers"))
except TrackerError as exc:
    _refuse(f"invalid config trackers:\n{exc}")


def tracked_runs():
    """The export target's track_run manifests: every run, every chosen tracker."""
    return [
        f"results/runs/{run}/track/{tracker}.manifest.json"
        for run in RUNS
        for tracker in TRACKERS
    ]


def run_keys_json(wildcards):
    return slice_file(KEYS[wildcards.run])


def run_spec_file(wildcards):
    return RUNS[wildcards.run].spec_file


def pushed_runs(pattern):
    """Targets of the runs whose spec opts in to export.push_to_hub."""
    return [
        pattern.format(run=name)
        for name, run in RUNS.items()
        if "push_to_hub" in run.sections["export"]
    ]


# reports: the spec values that differ between runs (the compare table's columns), the
# Markdown each report page renders
def compare_spec_json(wildcards):
    return slice_file(differing_values({n: r.sections for n, r in RUNS.items()}))


def report_page_markdown(wildcards):
    if wildcards.page == "evaluation":
        return f"results/runs/{wildcards.run}/evaluate/summary.md"
    if wildcards.page == "benchmarks":
        return f"results/runs/{wildcards.run}/benchmarks.md"
    return f"results/runs/{wildcards.run}/model_card.md"
