"""Specs of any size reach the steps: slices travel as files (results/slices/<sha256>.json),
never on the command line, whose single-argument limit (128 KiB on Linux, the whole shell
command being one argument of `bash -c`) 400 data sources or a long card text used to pass."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.workflow_fixtures import jobs_run, snakemake

pytestmark = pytest.mark.slow
SOURCES = 1000


def test_a_thousand_sources_and_a_200_kb_card_run(workflow):
    many = workflow / "data/many"
    many.mkdir(parents=True)
    for i in range(SOURCES):
        record = {"prompt": f"Spell {i}:", "completion": " ".join("x" * 3 for _ in str(i))}
        (many / f"source-{i:04d}.jsonl").write_text(json.dumps(record) + "\n")
    spec = yaml.safe_load((workflow / "specs/demo.yaml").read_text())
    fields = {"prompt": "prompt", "completion": "completion"}
    spec["data"] = {
        "sources": [
            {"path": f"data/many/source-{i:04d}.jsonl", "fields": dict(fields)} for i in range(SOURCES)
        ],
        "num_shards": 2,
        "validation_fraction": 0.2,
    }
    spec["export"]["card"]["summary"] = "A very long model card. " * 8500  # about 200 KB
    (workflow / "specs/demo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=200))

    ran = jobs_run(snakemake(workflow, "data"))
    assert ran["shard_data"] == 1 and ran["tokenize_shard"] == 2, ran
    manifest = json.loads(next((workflow / "results/data").glob("*/raw.manifest.json")).read_text())
    assert manifest["counts"]["records_read"] == SOURCES and len(manifest["details"]["sources"]) == SOURCES

    plan = snakemake(workflow, "export", "-n", "-p").stdout
    commands = re.findall(r"^\s*python -m scripts\.\w+ .*$", plan, re.MULTILINE)
    assert {"model_card", "train_model", "merge_model"} <= {c.split()[2].split(".")[1] for c in commands}
    assert max(map(len, commands)) < 4000, "a spec slice is on the command line"


def test_the_steps_that_read_every_token_shard_get_them_as_one_list_file(demo_build, tmp_path):
    """train_model, evaluate_model and audit_data read every shard of a run: 4096 shard paths
    (num_shards' maximum) on one command line would be about 250 KB, so they go as a JSON list
    file too. The dry run prints the commands Snakemake would run."""
    import shutil

    workdir = tmp_path / "demo"
    shutil.copytree(demo_build, workdir, symlinks=True)
    proc = snakemake(workdir, "-n", "-p", "export", "--forcerun", "audit_data")
    output = proc.stdout + proc.stderr
    shards = sorted(str(p.relative_to(workdir)) for p in (workdir / "results/tokens").glob("*/*.parquet"))
    assert len(shards) == 4
    for script in ("audit_data", "train_model", "evaluate_model"):
        (command,) = re.findall(rf"python -m scripts\.{script} .*?>logs/\S+ 2>&1", output, re.DOTALL)
        assert ".parquet" not in command, command
        (listed,) = re.findall(r"--tokens @(results/slices/[0-9a-f]{64}\.json)", command)
        assert sorted(json.loads((workdir / listed).read_text())) == shards
