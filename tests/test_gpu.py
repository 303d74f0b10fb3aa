"""On a CUDA GPU: the demo end to end with QLoRA and `precision: auto` (skipped without one).

What a user with one GPU checks: the environment step sees the GPU, training ran 4-bit with
bf16 compute, the tuned model beats the base, and the merged export loads and answers in a
fresh process (the smoke test).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow_fixtures import copy_workflow, snakemake

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_qlora_demo_trains_in_bf16_on_the_gpu_and_exports(tmp_path):
    workdir = copy_workflow(tmp_path / "gpu")
    spec_path = workdir / "specs/demo.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["train"].update(method="qlora", precision="auto", optimizer="paged_adamw_8bit")
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))

    snakemake(workdir, "export", "--scheduler", "greedy", timeout=1200)

    results = workdir / "results"
    environment = json.loads((results / "environment.json").read_text())
    assert environment["device"]["type"] == "cuda"
    train = json.loads((results / "runs/demo/train.manifest.json").read_text())
    assert train["details"]["method"] == "qlora"
    assert train["details"]["precision"] == "bf16"
    assert train["details"]["final_loss"] < train["details"]["first_loss"]
    report = json.loads((results / "runs/demo/evaluate/report.json").read_text())
    tuned, base = report["metrics"]["tuned"], report["metrics"]["base"]
    print("tuned", tuned, "base", base, "train", train["details"], train["timings"])
    assert tuned["exact_match"] > base["exact_match"]
    assert tuned["exact_match"] >= 0.9
    smoke = json.loads((results / "runs/demo/smoke_test.manifest.json").read_text())
    assert smoke["counts"]["checked"] == smoke["counts"]["passed"] == 2, smoke["details"]
