"""Spec compiler glue: every spec in specs/ (or --config specs=a.yaml,b.yaml) becomes runs,
each run's sections become content keys, and the functions below give rules their paths and
their parameters (each step's slice from the step table, scripts/common/steps.py, as canonical
JSON). Imports nothing heavy, and nothing from scripts/ outside scripts/common/."""

import glob
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from scripts.common.spec import SpecError, canonical_json, load_specs
from scripts.common.steps import (
    PIECE_FOLDER,
    EXPORT_PIECES,
    differing_values,
    step_slices,
)


def _spec_files():
    chosen = config.get("specs")
    if chosen:
        return chosen.split(",") if isinstance(chosen, str) else list(chosen)
    return sorted(glob.glob("specs/*.yaml"))


SPEC_FILES = _spec_files()
try:
    RUNS = {run.name: run for run in load_specs(SPEC_FILES)}
except SpecError as exc:
    raise WorkflowError(f"invalid spec:\n{exc}") from None

ENV = "results/environment.json"
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
# shared artifacts: content key -> (the slice its step reads, upstream keys)
DATA = {k["data"]: SLICES[n]["shard_data"] for n, k in KEYS.items()}
MODEL = {k["model"]: (SLICES[n]["base_model"], k["data"]) for n, k in KEYS.items()}
TOKENS = {
    k["tokens"]: (SLICES[n]["tokenize_shard"], k["data"], k["model"])
    for n, k in KEYS.items()
}
AUDIT = {
    k["audit"]: (SLICES[n]["audit_data"], k["data"], k["tokens"], k["model"])
    for n, k in KEYS.items()
}


wildcard_constraints:
    dkey="[0-9a-f]{12}",
    mkey="[0-9a-f]{12}",
    tkey="[0-9a-f]{12}",
    akey="[0-9a-f]{12}",
    page="evaluation|model_card",
    shard="[0-9a-f]{16}",
    run="[A-Za-z0-9][A-Za-z0-9._=+-]*",


def data_json(wildcards):
    return canonical_json(DATA[wildcards.dkey])


def data_sources(wildcards):
    """Source files; a save_to_disk folder stands for the files in it."""
    paths = []
    for source in DATA[wildcards.dkey]["sources"]:
        folder = Path(source["path"])
        if folder.is_dir():
            paths += sorted(str(p) for p in folder.rglob("*") if p.is_file())
        else:
            paths.append(source["path"])
    return paths


def shard_hashes(dkey):
    """The current shards of a data key (known once the shard_data checkpoint has run)."""
    import json

    manifest = checkpoints.shard_data.get(dkey=dkey).output.manifest
    with open(manifest) as handle:
        return [shard["hash"] for shard in json.load(handle)["details"]["shards"]]


def model_json(wildcards):
    return canonical_json(MODEL[wildcards.mkey][0])


def model_records(wildcards):
    """A built model trains its tokenizer on shard_data's bounded sample of the training split;
    a hub or local model reads no data."""
    model, dkey = MODEL[wildcards.mkey]
    return [f"results/data/{dkey}/tokenizer_sample.jsonl"] if "build" in model else []


def tokenize_json(wildcards):
    return canonical_json(TOKENS[wildcards.tkey][0])


def tokenize_inputs(wildcards):
    tokenize, dkey, mkey = TOKENS[wildcards.tkey]
    inputs = {
        "records": f"results/data/{dkey}/clean/{wildcards.shard}.jsonl",
        "model": f"results/models/{mkey}/model",
    }
    # the template file's text is in the key too; as an input, a missing file is reported clearly
    if tokenize["chat_template_file"]:
        inputs["template"] = tokenize["chat_template_file"]
    return inputs


def tokens_of(dkey, tkey):
    return [f"results/tokens/{tkey}/{h}.parquet" for h in shard_hashes(dkey)]


def run_tokens(wildcards):
    keys = KEYS[wildcards.run]
    return tokens_of(keys["data"], keys["tokens"])


def audit_tokens(wildcards):
    _, dkey, tkey, _ = AUDIT[wildcards.akey]
    return tokens_of(dkey, tkey)


def audit_json(wildcards):
    return canonical_json(AUDIT[wildcards.akey][0])


def audit_model(wildcards):
    return f"results/models/{AUDIT[wildcards.akey][3]}/model"


def run_audit(wildcards):
    return f"results/audit/{KEYS[wildcards.run]['audit']}.manifest.json"


def all_data(wildcards):
    """Every run's token shards and audit: the `data` target."""
    out = []
    for keys in KEYS.values():
        out += tokens_of(keys["data"], keys["tokens"])
        out.append(f"results/audit/{keys['audit']}.manifest.json")
    return sorted(set(out))


def run_base(wildcards):
    return f"results/models/{KEYS[wildcards.run]['model']}/model"


def run_base_manifest(wildcards):
    return f"results/models/{KEYS[wildcards.run]['model']}/model.manifest.json"


def run_slice(step):
    """A params function giving the slice of the step table that `step` reads, as canonical JSON."""

    def params(wildcards):
        return canonical_json(SLICES[wildcards.run][step])

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
    return canonical_json(RUNS[wildcards.run].sections)


def all_runs(pattern):
    return [pattern.format(run=name) for name in RUNS]


# export: the pieces of a run's export folder (by the step table), its data manifest, the runs
# that push to a hub
def run_export_pieces(wildcards):
    fmt = RUNS[wildcards.run].sections["export"]["format"]
    return [
        f"results/runs/{wildcards.run}/{PIECE_FOLDER[step]}"
        for step in EXPORT_PIECES[fmt]
    ]


def run_data_manifest(wildcards):
    return f"results/data/{KEYS[wildcards.run]['data']}/raw.manifest.json"


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
    return canonical_json(differing_values({n: r.sections for n, r in RUNS.items()}))


def report_page_markdown(wildcards):
    if wildcards.page == "evaluation":
        return f"results/runs/{wildcards.run}/evaluate/summary.md"
    return f"results/runs/{wildcards.run}/model_card.md"
