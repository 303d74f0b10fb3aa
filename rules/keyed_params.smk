"""Paths and parameters of the content-keyed artifacts that runs share: data shards, base
models, token shards, audits and reference log-probs (tables DATA, MODEL, TOKENS, AUDIT and
REFERENCE from rules/common.smk). Included by the Snakefile after common.smk."""

import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

from scripts.compiler.hub_sources import resolve_data
from scripts.compiler.steps import run_steps


def data_json(wildcards):
    return slice_file(DATA[wildcards.dkey])


def hub_json(wildcards):
    """Per data source, its hub resolution (commit, snapshot, files and their sha256, resolved
    once when the specs were loaded) or null: shard_data reads exactly those files."""
    return slice_file(resolve_data(DATA[wildcards.dkey]))


def data_sources(wildcards):
    """Source files; a save_to_disk folder stands for the files in it. A run (or dry run)
    refuses a missing source here: Snakemake alone says nothing when the data built from it
    exists, and would train on records whose file is gone. (The workflow's settings are not
    known yet when it is read, so this cannot happen earlier.)"""
    paths = []
    for index, source in enumerate(DATA[wildcards.dkey]["sources"]):
        if "hub" in source:  # its commit and files' sha256 are in the data key
            continue
        folder = Path(source["path"])
        if folder.is_dir():
            paths += sorted(str(p) for p in folder.rglob("*") if p.is_file())
        elif folder.is_file() or workflow.execution_settings is None:
            # (a present file, or --summary, --delete-all-output: those are not refused)
            paths.append(source["path"])
        else:
            _REFUSALS.append(_missing_source(wildcards.dkey, index, source["path"]))
            raise WorkflowError(_REFUSALS[-1])
    return paths


def _missing_source(dkey, index, path):
    specs = sorted({RUNS[n].spec_file for n, k in KEYS.items() if k["data"] == dkey})
    return (
        f"data source not found: {path} (data.sources[{index}].path in "
        f"{', '.join(specs)}; paths are relative to the workflow folder, {Path.cwd()}). "
        "Restore the file, or remove the source from the spec: the data is then rebuilt "
        "without it. Nothing was run."
    )


def shard_hashes(dkey):
    """The current shards of a data key (known once the shard_data checkpoint has run)."""
    import json

    manifest = checkpoints.shard_data.get(dkey=dkey).output.manifest
    with open(manifest) as handle:
        return [shard["hash"] for shard in json.load(handle)["details"]["shards"]]


def model_json(wildcards):
    return slice_file(MODEL[wildcards.mkey][0])


def model_records(wildcards):
    """A built model trains its tokenizer on shard_data's bounded sample of the training split;
    a hub or local model reads no data."""
    model, dkey, _ = MODEL[wildcards.mkey]
    return [f"results/data/{dkey}/tokenizer_sample.jsonl"] if "build" in model else []


def model_parent(wildcards):
    """model.from_run: the named run's trained model and its base (merged into this base)."""
    parent = MODEL[wildcards.mkey][2]
    if parent is None:
        return {}
    return {
        "tuned": f"results/runs/{parent.name}/train/model",
        "parent_base": f"results/models/{parent.keys['model']}/model",
    }


def model_parent_args(wildcards, input):
    """The base_model script's arguments for model.from_run (none otherwise)."""
    parent = MODEL[wildcards.mkey][2]
    if parent is None:
        return ""
    method = parent.sections["train"]["method"]
    return (
        f"--tuned {shlex.quote(input.tuned)} --parent-base {shlex.quote(input.parent_base)} "
        f"--parent-method {method} --parent-run {shlex.quote(parent.name)}"
    )


def tokenize_json(wildcards):
    return slice_file(TOKENS[wildcards.tkey][0])


def tokenize_data_json(wildcards):
    """The data section of the shard's data key: tokenize_shard cleans the raw shard with it."""
    return slice_file(DATA[TOKENS[wildcards.tkey][1]])


def tokenize_inputs(wildcards):
    tokenize, dkey, mkey = TOKENS[wildcards.tkey]
    inputs = {
        "records": f"results/data/{dkey}/raw/{wildcards.shard}.jsonl",
        "model": f"results/models/{mkey}/model",
    }
    # the template file's text is in the key too; as an input, a missing file is reported clearly
    if tokenize["chat_template_file"]:
        inputs["template"] = tokenize["chat_template_file"]
    return inputs


def tokenize_previous(wildcards):
    """shard_data's map of rebuilt shards to the shards they replaced (a fixed path per
    data key: a param that never reruns a job); tokenize_shard reuses their rows."""
    return f"results/data/{TOKENS[wildcards.tkey][1]}/cache/previous.json"


def tokens_of(dkey, tkey):
    return [f"results/tokens/{tkey}/{h}.parquet" for h in shard_hashes(dkey)]


def run_tokens(wildcards):
    keys = KEYS[wildcards.run]
    return tokens_of(keys["data"], keys["tokens"])


def audit_tokens(wildcards):
    _, dkey, tkey, _ = AUDIT[wildcards.akey]
    return tokens_of(dkey, tkey)


def audit_json(wildcards):
    return slice_file(AUDIT[wildcards.akey][0])


def audit_model(wildcards):
    return f"results/models/{AUDIT[wildcards.akey][3]}/model"


def reference_json(wildcards):
    return slice_file(REFERENCE[wildcards.rkey][0])


def reference_tokens(wildcards):
    _, dkey, tkey, _ = REFERENCE[wildcards.rkey]
    return tokens_of(dkey, tkey)


def reference_threads(wildcards):
    return REFERENCE[wildcards.rkey][0]["threads"]


def reference_base(wildcards):
    return f"results/models/{REFERENCE[wildcards.rkey][3]}/model"


def run_reference(wildcards):
    """The reference log-probs a run reads (none for an objective without a reference)."""
    if "reference_logps" not in run_steps(RUNS[wildcards.run].sections):
        return []
    return f"results/reference/{KEYS[wildcards.run]['reference']}/logps.parquet"


def reference_arg(wildcards, input):
    reference = (
        list(input.reference)
        if not isinstance(input.reference, str)
        else [input.reference]
    )
    return " ".join(f"--reference {shlex.quote(path)}" for path in reference)


def run_audit(wildcards):
    return f"results/audit/{KEYS[wildcards.run]['audit']}.manifest.json"


def all_data(wildcards):
    """Every run's token shards and audit: the `data` target."""
    out = []
    for keys in KEYS.values():
        out += tokens_of(keys["data"], keys["tokens"])
        out.append(f"results/audit/{keys['audit']}.manifest.json")
    return sorted(set(out))
