"""The bad-input corpus (tests/bad_inputs/*.yaml): every case fails with its message.

Each case states what a user would see. `spec` cases edit the demo spec (dotted keys; null
deletes), replace text in it, or give a whole text (optionally padded with a comment to
`pad` bytes). They are refused by the spec loader at DAG-build time, so they run through it
directly: all of them in one child process limited to 2 GiB of address space, each within
60 s, checking the message and that no other exception (MemoryError, a traceback) came out;
a few representative ones also run through a real `snakemake -n`, to check the message
reaches the terminal with a non-zero exit before any job is planned. `data` cases run the
data step's CLI on a bad file, `model` cases the base model step's CLI on a bad model
folder, and `tokenize` cases the tokenize step's CLI on a clean chat shard with a bad chat
template, as the rules do: non-zero exit, the message, no traceback, no manifest left behind,
each within 60 s and 2 GiB of resident memory. `workflow` cases run `snakemake` in a copy of
the workflow after a setup (a source deleted after its data was built, another run working in
the folder): non-zero exit, the message, no job started, within the same bounds.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.bad_input_runs import MEMORY_LIMIT, TIME_LIMIT, run_measured
from tests.hub_datasets import hub_env
from tests.workflow_fixtures import REPO, another_run_holding, copy_workflow, jobs_run, snakemake

SNAKEMAKE_ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
CASES = sorted((REPO / "tests" / "bad_inputs").glob("*.yaml"))
DEMO_TEXT = (REPO / "specs" / "demo.yaml").read_text()
DEMO = yaml.safe_load(DEMO_TEXT)


def load_case(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def apply_edit(spec: dict, edit: dict) -> dict:
    spec = copy.deepcopy(spec)
    for dotted, value in edit.items():
        node, *parents = spec, *dotted.split(".")[:-1]
        for part in parents:
            node = node.setdefault(part, {})
        last = dotted.split(".")[-1]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("bad_inputs"))


def spec_text(case: dict) -> str:
    """The spec file of a spec case."""
    text = {
        "spec": lambda: yaml.safe_dump(apply_edit(DEMO, case["edit"])),
        "spec_text": lambda: case["text"],
        "spec_replace": lambda: DEMO_TEXT.replace(*case["replace"]),
    }[case["kind"]]()
    if case["kind"] == "spec_replace":
        assert case["replace"][0] in DEMO_TEXT, "the text to replace is not in specs/demo.yaml"
    if "pad" in case:
        text += "#" * (case["pad"] - len(text.encode()) - 1) + "\n"
    return text


def run_case(case: dict, workdir: Path, name: str):
    if case["kind"].startswith("spec"):
        spec = workdir / "specs" / f"{name}.yaml"
        spec.write_text(spec_text(case))
        try:
            command = [sys.executable, "-m", "snakemake", "--cores", "2", "-n", "export"]
            return run_measured([*command, "--config", f"specs=specs/{name}.yaml"], workdir, SNAKEMAKE_ENV)
        finally:
            spec.unlink()
    if case["kind"] == "model":
        return run_model_case(case, workdir, name)
    if case["kind"] == "tokenize":
        return run_tokenize_case(case, workdir, name)
    if case["kind"] == "workflow":
        return run_workflow_case(case, workdir.parent / name)
    data = workdir / "data" / "bad" / case["file"]
    data.parent.mkdir(parents=True, exist_ok=True)
    if not case.get("absent"):
        data.write_bytes(bytes.fromhex(case["hex"]) if "hex" in case else case["content"].encode())
    source = {"path": f"data/bad/{case['file']}", **case["source"]}
    spec_json = yaml.safe_dump({"sources": [source]}, default_flow_style=True, width=10**6)
    manifest = workdir / "results" / "bad" / name / "shards.json"
    proc = run_measured(
        [
            sys.executable,
            "-m",
            "scripts.shard_data",
            "--spec-json",
            _json(spec_json),
            "--shard-dir",
            str(manifest.parent / "raw"),
            "--manifest",
            str(manifest),
        ],
        cwd=workdir,
    )
    assert not manifest.exists(), "a failed data step left a manifest that looks complete"
    return proc


def run_model_case(case: dict, workdir: Path, name: str):
    """The base_model step on a hub id or local folder, as its rule runs it."""
    out = workdir / "results" / "bad" / name
    proc = run_measured(
        [
            sys.executable,
            "-m",
            "scripts.base_model",
            "--spec-json",
            json.dumps(case["model"]),
            "--out",
            str(out / "model"),
            "--manifest",
            str(out / "manifest.json"),
        ],
        cwd=REPO,
    )
    assert not (out / "manifest.json").exists(), "a failed model step left a manifest"
    return proc


def run_workflow_case(case: dict, workdir: Path):
    """`snakemake <run>` in a fresh copy of the workflow after the case's setup: `build` these
    targets first, then `delete` a file, and/or `hold`: another snakemake run has a job in
    flight in the folder (a rule added to this copy only) while this one starts."""
    copy_workflow(workdir)
    env = SNAKEMAKE_ENV
    command = [sys.executable, "-m", "snakemake", "--cores", "2"]
    for target in case.get("build", []):
        snakemake(workdir, target)
    if "delete" in case:
        (workdir / case["delete"]).unlink()
    if not case.get("hold"):
        proc = run_measured([*command, *case["run"]], workdir, env)
    else:
        with another_run_holding(workdir):
            proc = run_measured([*command, *case["run"]], workdir, env)
    assert not jobs_run(proc) and "Job stats" not in proc.stdout, "a job was planned"
    return proc


CHAT_SHARD = (  # one cleaned chat record (with its split): tokenize_shard without --data-json
    '{"id": "0123456789abcdef", "split": "train", "messages": [{"role": "user", "content": "Spell 12:"}, '
    '{"role": "assistant", "content": "one two"}]}\n'
)


def run_tokenize_case(case: dict, workdir: Path, name: str):
    """The tokenize_shard step on a clean shard (`content`, else CHAT_SHARD) with the case's
    tokenize section; `files` are written into the workflow folder first (template files)."""
    for path, text in case.get("files", {}).items():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text(text)
    out = Path("results") / "bad" / name
    (workdir / out).mkdir(parents=True, exist_ok=True)
    (workdir / out / "clean.jsonl").write_text(case.get("content", CHAT_SHARD))
    proc = run_measured(
        [
            sys.executable,
            "-m",
            "scripts.tokenize_shard",
            "--spec-json",
            json.dumps(case["tokenize"]),
            "--input",
            str(out / "clean.jsonl"),
            "--tokenizer",
            str(REPO / "tests" / "data" / "mismatched_model"),  # its tokenizer is fine
            "--out",
            str(out / "tokens.parquet"),
            "--manifest",
            str(out / "tokens.manifest.json"),
        ],
        cwd=workdir,  # a runaway template is killed after TIME_LIMIT (run_measured)
    )
    assert not (workdir / out / "tokens.manifest.json").exists(), "a failed tokenize step left a manifest"
    return proc


def _json(flow_yaml: str) -> str:
    return json.dumps(yaml.safe_load(flow_yaml))


SPEC_CASES = [p for p in CASES if load_case(p)["kind"].startswith("spec")]
STEP_CASES = [p for p in CASES if p not in SPEC_CASES]
# Through a real `snakemake -n` as well: an unknown key with its did-you-mean, a YAML syntax
# error, a sweep error, and the alias bomb (it used to end every snakemake command in MemoryError).
SNAKEMAKE_SPEC_CASES = (
    "spec-02-misspelled-train-key",
    "spec-44-invalid-yaml",
    "spec-43-sweep-escapes-results",
    "spec-71-yaml-alias-bomb",
)


@pytest.fixture(scope="module")
def refusals(workdir) -> dict:
    """Every spec case through the spec loader, in one child process (see refuse_specs)."""
    names = [p.stem for p in SPEC_CASES]
    for path in SPEC_CASES:
        (workdir / "specs" / f"{path.stem}.yaml").write_text(spec_text(load_case(path)))
    out = workdir / "refusals.json"
    code = f"from tests.bad_input_runs import refuse_specs; refuse_specs({names!r}, {str(out)!r})"
    # hub sources resolve offline from the fixture cache (tests/hub_datasets.py)
    env = dict(os.environ, PYTHONPATH=str(REPO), **hub_env(workdir.parent / "hub-cache"))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
        )
    finally:
        for name in names:
            (workdir / "specs" / f"{name}.yaml").unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("path", SPEC_CASES, ids=[p.stem for p in SPEC_CASES])
def test_spec_case_is_refused_with_its_message(path, refusals):
    result = refusals["cases"][path.stem]
    assert result["outcome"] == "refused", result["message"] or "the spec was accepted"
    assert load_case(path)["expect"] in result["message"], result["message"]
    assert result["message"].startswith(f"specs/{path.stem}.yaml"), "the message names the file"
    assert "Traceback" not in result["message"]
    assert result["seconds"] < TIME_LIMIT


def test_spec_cases_are_refused_in_bounded_memory(refusals):
    """All spec cases, the alias bomb among them, in one process of at most 2 GiB."""
    assert refusals["peak_bytes"] < MEMORY_LIMIT
    assert set(refusals["cases"]) == {p.stem for p in SPEC_CASES}


@pytest.mark.parametrize("name", SNAKEMAKE_SPEC_CASES)
def test_spec_case_fails_snakemake_before_any_job(name, workdir):
    path = REPO / "tests" / "bad_inputs" / f"{name}.yaml"
    case = load_case(path)
    proc = run_case(case, workdir, name)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert case["expect"] in output, output[-2000:]
    assert "Traceback" not in output
    assert not jobs_run(proc) and "Job stats" not in output, "a job was planned for a refused spec"
    assert proc.seconds < TIME_LIMIT and proc.peak_bytes < MEMORY_LIMIT, (proc.seconds, proc.peak_bytes)


@pytest.mark.parametrize("path", STEP_CASES, ids=[p.stem for p in STEP_CASES])
def test_bad_input_fails_with_its_message(path, workdir):
    case = load_case(path)
    proc = run_case(case, workdir, path.stem)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert case["expect"] in output, output[-2000:]
    assert "Traceback" not in output
    assert proc.seconds < TIME_LIMIT and proc.peak_bytes < MEMORY_LIMIT, (proc.seconds, proc.peak_bytes)


CASE_KEYS = {
    "spec": {"edit"},
    "spec_text": {"text"},
    "spec_replace": {"replace"},
    "data": {"file", "source", "content", "hex", "absent"},
    "model": {"model"},
    "tokenize": {"tokenize", "content", "files"},
    "workflow": {"build", "delete", "hold", "run"},
}
GENERIC = {"error", "invalid", "failed", "not valid", "traceback", "exception"}


def test_every_case_is_named_once_and_expects_a_specific_message():
    """Case files are checked, not just counted: a distinct number and name per case, only
    known keys (a misspelled `expect` would otherwise go unnoticed), a distinct input, and an
    expected message long enough to say what is wrong."""
    numbers, inputs = [], []
    for path in CASES:
        case = load_case(path)
        match = re.fullmatch(
            r"(spec|data|model|tokenize|workflow)-(\d{2,})-[a-z0-9]+(?:-[a-z0-9]+)*", path.stem
        )
        assert match and case["kind"].startswith(match[1]), path.stem
        numbers.append(int(match[2]))
        assert set(case) <= {"kind", "expect", "pad", *CASE_KEYS[case["kind"]]}, path.stem
        assert isinstance(case["expect"], str) and len(case["expect"]) >= 12, path.stem
        assert case["expect"].lower().strip(" .:") not in GENERIC, path.stem
        inputs.append(json.dumps({k: v for k, v in case.items() if k != "expect"}, sort_keys=True))
    assert len(set(numbers)) == len(numbers), "two cases share a number"
    assert len(set(inputs)) == len(inputs), "two cases have the same input"


DOC = REPO / "docs" / "bad-inputs.md"
# Below the generated table, by hand: cases that need a build, a lock file or a run, each with
# the test that checks it (the generator keeps this section as it is).
ELSEWHERE = "\n## Cases tested elsewhere\n"


def workflow_setup(case: dict) -> str:
    """A workflow case's input, as the docs table says it."""
    if case["kind"] != "workflow":
        return ""
    steps = [f"snakemake {target}" for target in case.get("build", [])]
    steps += [f"rm {case['delete']}"] if "delete" in case else []
    steps += ["while another snakemake run works on results/hold.txt"] if case.get("hold") else []
    return "; ".join([*steps, "snakemake " + " ".join(case["run"])])


def render_table() -> str:
    """docs/bad-inputs.md: every case with the message a user sees (regenerate: python -m tests.test_bad_inputs)."""
    rows = []
    for path in CASES:
        case = load_case(path)
        what = (
            case.get("edit")
            or case.get("replace")
            or case.get("model")
            or case.get("file")
            or case.get("tokenize")
            or workflow_setup(case)
            or "(whole text)"
        )
        if "pad" in case:
            what = f"demo spec padded to {case['pad']} bytes"
        what = str(what).replace("|", "\\|").replace("\n", " ")
        expect = case["expect"].replace("|", "\\|")
        rows.append(f"| {path.stem} | {case['kind']} | `{what}` | {expect} |")
    head = [
        "# Bad inputs and their messages",
        "",
        f"{len(CASES)} cases from `tests/bad_inputs/`; `tests/test_bad_inputs.py` checks each fails with",
        "its message and no Python traceback, each within 60 s and 2 GiB. Data, model and tokenize cases",
        "run their step's CLI: non-zero exit, no manifest left behind. Spec cases are refused by the spec",
        "loader at DAG-build time naming the file (and line); four (02, 43, 44, 71) also run through",
        "`snakemake -n`: non-zero exit, the message on the terminal, no job planned. Workflow cases run",
        "`snakemake` in a workflow folder after their setup: non-zero exit, the message, no job started.",
        "",
        "| case | kind | input | message (excerpt) |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"


def test_docs_table_lists_every_case():
    generated = DOC.read_text().split(ELSEWHERE)[0]
    assert generated == render_table(), "regenerate with: python -m tests.test_bad_inputs"


if __name__ == "__main__":
    text = DOC.read_text()
    DOC.write_text(render_table() + (ELSEWHERE + text.split(ELSEWHERE, 1)[1] if ELSEWHERE in text else ""))
