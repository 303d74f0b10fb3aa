"""Every extension point is one table, tied to the schema that names its choices: objectives,
metrics, GGUF types. And the compiler applies every default once, so equal meanings hash equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scripts.compiler.objectives import KINDS, OBJECTIVES, logged_keys, objective_blocks, resolve
from scripts.compiler.spec import artifact_keys, load_spec_file
from scripts.compiler.steps import run_steps, step_slices

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCHEMA = json.loads((REPO / "schemas/spec/train.schema.json").read_text())


def test_the_objective_table_is_the_schema_enum_and_each_block_is_in_the_schema():
    properties = TRAIN_SCHEMA["properties"]
    assert list(OBJECTIVES) == properties["objective"]["enum"]
    for name, entry in OBJECTIVES.items():
        assert entry.block is None or properties[entry.block]["type"] == "object", name
        assert set(entry.accepts) <= set(KINDS), name
        assert entry.accepts and set(KINDS) - set(entry.accepts) <= set(entry.refusals) | (
            set(KINDS) if "*" in entry.refusals else set()
        ), name
    # every object property of train that is not a method's block is some objective's block
    blocks = {key for key, sub in properties.items() if sub.get("type") == "object"}
    assert blocks - {"lora", "qlora"} == set(objective_blocks())


def test_the_table_names_training_functions_that_exist_and_the_log_keeps_their_keys():
    from scripts.training.train_log import LOGGED

    for name, entry in OBJECTIVES.items():
        for dotted in (entry.dataset, entry.trainer, *entry.checks):
            assert callable(resolve(dotted)), (name, dotted)
    assert set(logged_keys()) <= set(LOGGED)


SPEC = {
    "spec_version": 1,
    "model": {"build": {"vocab_size": 512, "hidden_size": 16, "num_layers": 1, "num_heads": 2}},
    "data": {
        "sources": [{"path": "pairs.jsonl", "fields": {"prompt": "p", "chosen": "c", "rejected": "r"}}],
        "validation_fraction": 0.2,
    },
    "train": {"objective": "dpo", "max_steps": 2},
    "export": {"format": "merged", "smoke_prompts": [{"prompt": "q", "expected": "a"}]},
}
DPO_DEFAULTS = {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0, "sft_weight": 0}


def compiled(tmp_path, name: str, train: dict):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "train": train}, sort_keys=False))
    (tmp_path / "pairs.jsonl").write_text('{"p": "q", "c": "a", "r": "b"}\n')
    (run,) = load_spec_file(path)
    return run


def test_an_omitted_empty_or_written_out_block_compiles_to_one_slice_and_one_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"objective": "dpo", "max_steps": 2}
    runs = [
        compiled(tmp_path, "omitted", base),
        compiled(tmp_path, "empty", {**base, "dpo": {}}),
        compiled(tmp_path, "written", {**base, "dpo": dict(DPO_DEFAULTS)}),
    ]
    slices = [run.sections["train"] for run in runs]
    assert slices[0]["dpo"] == DPO_DEFAULTS
    assert slices[0] == slices[1] == slices[2]
    keys = [artifact_keys(run.sections) for run in runs]
    assert keys[0]["train"] == keys[1]["train"] == keys[2]["train"]
    assert "reference_logps" in run_steps(runs[0].sections)
    assert step_slices(runs[0].sections)["train_model"][1] == slices[0]


def test_the_method_block_is_filled_too_and_sft_lora_slices_get_no_objective_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"objective": "dpo", "method": "qlora", "max_steps": 2}
    qlora = [compiled(tmp_path, "q1", base), compiled(tmp_path, "q2", {**base, "qlora": {}})]
    assert qlora[0].sections["train"] == qlora[1].sections["train"]
    assert qlora[0].sections["train"]["qlora"]["quant_type"] == "nf4"
    sft = compiled(tmp_path, "sft", {"max_steps": 2})  # pairs train sft on their chosen response
    assert not set(objective_blocks()) & set(sft.sections["train"])
    assert "qlora" not in sft.sections["train"]
    assert "reference_logps" not in run_steps(sft.sections)


@pytest.mark.parametrize("objective", [name for name, entry in OBJECTIVES.items() if entry.block])
def test_a_block_is_refused_with_another_objective(tmp_path, monkeypatch, objective):
    from scripts.compiler.spec import SpecError

    monkeypatch.chdir(tmp_path)
    other = "orpo" if objective != "orpo" else "simpo"
    block = OBJECTIVES[objective].block
    settings = {"rewards": [{"metric": "exact_match"}]} if block == "grpo" else {}
    with pytest.raises(SpecError, match=f"train.{block}: applies to objective {objective}"):
        compiled(tmp_path, "bad", {"objective": other, "max_steps": 2, block: settings})


def test_the_metric_table_is_the_evaluate_enum_and_the_report_names():
    from scripts.common import metrics as M
    from scripts.evaluation import evaluation, preference_eval

    evaluate = json.loads((REPO / "schemas/spec/evaluate.schema.json").read_text())["properties"]
    assert list(M.TABLE) == evaluate["metrics"]["items"]["enum"]
    for name, metric in M.TABLE.items():
        assert metric.options is None or evaluate[metric.options]["type"] == "object", name
        assert (metric.function is None) == (name in evaluation.LOSS_METRICS), name
    report = json.loads((REPO / "schemas/report.schema.json").read_text())["properties"]
    names = list(evaluation.HIGHER_IS_BETTER)
    assert names == [*M.HIGHER_IS_BETTER, *preference_eval.HIGHER_IS_BETTER]
    assert names == report["higher_is_better"]["propertyNames"]["enum"]
    assert names == report["improved"]["anyOf"][0]["propertyNames"]["enum"]


def test_the_gguf_type_table_is_the_export_enum():
    from scripts.compiler.gguf_rules import TYPES

    export = json.loads((REPO / "schemas/spec/export.schema.json").read_text())["properties"]
    assert list(TYPES) == export["gguf"]["properties"]["types"]["items"]["enum"]
