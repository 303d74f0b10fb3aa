"""The bad-input corpus (tests/bad_inputs/*.yaml): every case fails with its message.

Each case states what a user would see. The test checks: non-zero exit, the message, no
Python traceback, and no complete-looking output. `spec` cases edit the demo spec (dotted
keys; null deletes), replace text in it, or give a whole text, and run `snakemake -n` on it, so they fail at DAG-build time before any
job; `data` cases run the data step's CLI on a bad file, and `model` cases the base model
step's CLI on a bad model folder, as the rules do.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workflow_fixtures import REPO, copy_workflow, snakemake

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


def run_case(case: dict, workdir: Path, name: str):
    if case["kind"].startswith("spec"):
        text = {
            "spec": lambda: yaml.safe_dump(apply_edit(DEMO, case["edit"])),
            "spec_text": lambda: case["text"],
            "spec_replace": lambda: DEMO_TEXT.replace(*case["replace"]),
        }[case["kind"]]()
        spec = workdir / "specs" / f"{name}.yaml"
        spec.write_text(text)
        try:
            return snakemake(workdir, "-n", "export", "--config", f"specs=specs/{name}.yaml", check=False)
        finally:
            spec.unlink()
    if case["kind"] == "model":
        return run_model_case(case, workdir, name)
    data = workdir / "data" / "bad" / case["file"]
    data.parent.mkdir(parents=True, exist_ok=True)
    if not case.get("absent"):
        data.write_bytes(bytes.fromhex(case["hex"]) if "hex" in case else case["content"].encode())
    source = {"path": f"data/bad/{case['file']}", **case["source"]}
    spec_json = yaml.safe_dump({"sources": [source]}, default_flow_style=True, width=10**6)
    manifest = workdir / "results" / "bad" / name / "shards.json"
    proc = subprocess.run(
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
        capture_output=True,
        text=True,
    )
    assert not manifest.exists(), "a failed data step left a manifest that looks complete"
    return proc


def run_model_case(case: dict, workdir: Path, name: str):
    """The base_model step on a hub id or local folder, as its rule runs it."""
    import json

    out = workdir / "results" / "bad" / name
    proc = subprocess.run(
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
        capture_output=True,
        text=True,
    )
    assert not (out / "manifest.json").exists(), "a failed model step left a manifest"
    return proc


def _json(flow_yaml: str) -> str:
    import json

    return json.dumps(yaml.safe_load(flow_yaml))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_input_fails_with_its_message(path, workdir):
    case = load_case(path)
    proc = run_case(case, workdir, path.stem)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert case["expect"] in output, output[-2000:]
    assert "Traceback" not in output
    assert not (workdir / "results" / "runs").exists()


def test_the_corpus_is_large_enough():
    kinds = [load_case(p)["kind"] for p in CASES]
    assert len(kinds) >= 40


DOC = REPO / "docs" / "bad-inputs.md"


def render_table() -> str:
    """docs/bad-inputs.md: every case with the message a user sees (regenerate: python -m tests.test_bad_inputs)."""
    rows = []
    for path in CASES:
        case = load_case(path)
        what = (
            case.get("edit") or case.get("replace") or case.get("model") or case.get("file") or "(whole text)"
        )
        what = str(what).replace("|", "\\|").replace("\n", " ")
        expect = case["expect"].replace("|", "\\|")
        rows.append(f"| {path.stem} | {case['kind']} | `{what}` | {expect} |")
    head = [
        "# Bad inputs and their messages",
        "",
        f"{len(CASES)} cases from `tests/bad_inputs/`; `tests/test_bad_inputs.py` checks each fails with",
        "its message, a non-zero exit, no Python traceback and no complete-looking output.",
        "",
        "| case | kind | input | message (excerpt) |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"


def test_docs_table_lists_every_case():
    assert DOC.read_text() == render_table(), "regenerate with: python -m tests.test_bad_inputs"


if __name__ == "__main__":
    DOC.write_text(render_table())
