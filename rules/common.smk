"""Spec compiler glue: every spec in specs/ (or --config specs=a.yaml,b.yaml) becomes runs,
each run's sections become content keys, and the functions below give rules their paths and
their parameters (each step's slice from the step table, scripts/compiler/steps.py, as canonical
JSON). Imports nothing heavy, and nothing from scripts/ outside scripts/common/."""

import fcntl
import glob
import hashlib
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError

from scripts.compiler.hub_sources import resolve_data
from scripts.compiler.spec import SpecError, canonical_json, load_specs
from scripts.compiler.steps import (
    PIECE_FOLDER,
    differing_values,
    export_pieces,
    run_steps,
    step_slices,
)
from scripts.compiler.tracker_choice import TrackerError, choose_trackers


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
# shared artifacts: content key -> (the slice its step reads, upstream keys)
DATA = {k["data"]: SLICES[n]["shard_data"] for n, k in KEYS.items()}
MODEL = {
    k["model"]: (SLICES[n]["base_model"], k["data"], RUNS[n].parent)
    for n, k in KEYS.items()
}
TOKENS = {
    k["tokens"]: (SLICES[n]["tokenize_shard"], k["data"], k["model"])
    for n, k in KEYS.items()
}
AUDIT = {
    k["audit"]: (SLICES[n]["audit_data"], k["data"], k["tokens"], k["model"])
    for n, k in KEYS.items()
}
# reference log-probs, for the runs whose objective has a reference (a sweep shares one)
REFERENCE = {
    k["reference"]: (SLICES[n]["reference_logps"], k["data"], k["tokens"], k["model"])
    for n, k in KEYS.items()
    if "reference_logps" in run_steps(RUNS[n].sections)
}


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
    raise WorkflowError(f"invalid config trackers:\n{exc}") from None


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


# Another run in this folder. A run that starts jobs registers in .snakemake/tunemake/runs/
# (the Snakefile's onstart) and holds an flock on its file until it ends; the kernel drops the
# flock when the process dies, even by kill -9. When Snakemake refuses a run over a lock or
# "incomplete" files while a registered run is alive, the message says so, instead of advising
# --rerun-incomplete or --unlock, which would break that run. With no live run (a stale lock
# after a crash), Snakemake's own message stands.
RUNS_DIR = Path(".snakemake/tunemake/runs")
_OWN_RUN = []


def _own_run_file():
    return RUNS_DIR / f"{socket.gethostname()}-{os.getpid()}.json"


def _flock_free(path, kind):
    """Whether `path` can be flocked (LOCK_SH: no live owner; LOCK_EX: nobody holds it)."""
    with open(path) as handle:
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def live_runs():
    """The registered runs of other processes that are still alive."""
    live = []
    for path in sorted(RUNS_DIR.glob("*.json")):
        try:
            if path != _own_run_file() and not _flock_free(path, fcntl.LOCK_SH):
                live.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # gone meanwhile
            continue
    return live


def register_run():
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    for path in RUNS_DIR.glob("*.json"):  # files of runs that died
        try:
            if _flock_free(path, fcntl.LOCK_EX):
                path.unlink(missing_ok=True)
        except OSError:
            continue
    temporary = _own_run_file().with_suffix(".tmp")
    handle = open(temporary, "w")
    # locked before it is visible: a visible file is locked (alive) or stale
    fcntl.flock(handle, fcntl.LOCK_EX)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    json.dump(run | {"command": " ".join(sys.argv)}, handle)
    handle.flush()
    temporary.replace(_own_run_file())
    _OWN_RUN.append(handle)


def release_run():
    while _OWN_RUN:
        _own_run_file().unlink(missing_ok=True)
        _OWN_RUN.pop().close()


def another_run_message(runs):
    run = runs[0]
    return (
        f"another snakemake run is working in this folder: pid {run['pid']} on {run['host']}, "
        f"started {run['started']}: {run['command']}\n"
        "Wait for it to finish (or stop it), then run again. The lock is its lock and the files "
        "Snakemake would call incomplete are its jobs in progress: do not use --unlock or "
        "--rerun-incomplete while it runs."
    )


_REFUSALS = []  # messages of refusals raised in input functions, for _Refusals


class _Refusals(logging.Filter):
    """Rewrites Snakemake's lock and incomplete-files refusals while another run is alive, and
    shows a refusal raised in an input function as its message alone (Snakemake would add the
    input function's wildcards and a "Traceback:" of rules/common.smk)."""

    tunemake = True
    refusals = ("LockException", "IncompleteFilesException")

    def filter(self, record):
        exception = getattr(record, "exception", None)
        if exception in self.refusals:
            runs = live_runs()
            if runs:
                record.msg, record.args = another_run_message(runs), ()
        elif exception == "InputFunctionException" and _REFUSALS:
            if _REFUSALS[-1] in str(record.msg):
                record.msg, record.args = _REFUSALS[-1], ()
        return True


_SNAKEMAKE_LOG = logging.getLogger("snakemake.logging")
if not any(getattr(f, "tunemake", False) for f in _SNAKEMAKE_LOG.filters):
    _SNAKEMAKE_LOG.addFilter(_Refusals())
