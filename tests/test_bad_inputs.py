"""The bad-input corpus (tests/bad_inputs/*.yaml): every case fails with its message.

Each case states what a user would see. The test checks: non-zero exit, the message, no
Python traceback, and no complete-looking output. `spec` cases edit the demo spec (dotted
keys; null deletes), replace text in it, or give a whole text, and run `snakemake -n` on it, so they fail at DAG-build time before any
job; `data` cases run the data step's CLI on a bad file, as the rule does.
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
    data = workdir / "data" / "bad" / case["file"]
    data.parent.mkdir(parents=True, exist_ok=True)
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
