"""`snakemake why`: after a spec or data edit, it names what changed in spec terms and the steps
that rerun, and those steps are the ones Snakemake itself would run."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.workflow_fixtures import jobs_run, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture
def built(demo_build, tmp_path):
    """A copy of the built demo (results, Snakemake's metadata and file times included)."""
    workdir = tmp_path / "why"
    shutil.copytree(demo_build, workdir, symlinks=True)
    return workdir


def why(workdir) -> list[str]:
    proc = snakemake(workdir, "why")
    return [line.strip() for line in (proc.stdout + proc.stderr).splitlines()]


def reruns(lines: list[str]) -> set[str]:
    (line,) = [line for line in lines if line.startswith("reruns: ")]
    return set(line.removeprefix("reruns: ").split(", "))


def snakemake_would_run(workdir) -> set[str]:
    """Every job of `snakemake export -n` but the target itself (`why` names steps)."""
    return set(jobs_run(snakemake(workdir, "export", "-n"))) - {"export"}


def replace_in_spec(workdir, old: str, new: str) -> None:
    path = workdir / "specs/demo.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_nothing_changed(built):
    assert "up to date in spec terms (snakemake -n also checks code and file times)" in why(built)
    assert snakemake_would_run(built) == set()


def test_a_learning_rate_edit_names_the_key_and_the_steps_after_training(built):
    replace_in_spec(built, "learning_rate: 3e-3", "learning_rate: 1e-3")
    lines = why(built)
    assert "train.learning_rate: 0.003 -> 0.001" in lines
    assert [line for line in lines if line.startswith(("data", "model", "tokenize", "export"))] == []
    assert reruns(lines) == {
        "train_model",
        "evaluate_model",
        "merge_model",
        "model_card",
        "export_model",
        "smoke_test",
    }
    assert reruns(lines) == snakemake_would_run(built)


def test_an_evaluate_edit_reruns_evaluation_and_the_card(built):
    replace_in_spec(built, "batch_size: 128", "batch_size: 64")
    lines = why(built)
    assert "evaluate.batch_size: 128 -> 64" in lines
    assert reruns(lines) == {"evaluate_model", "model_card", "export_model", "smoke_test"}
    assert reruns(lines) == snakemake_would_run(built)


def test_a_card_edit_names_the_card_step(built):
    replace_in_spec(built, "not a useful model.", "not a useful one.")
    lines = why(built)
    assert any(line.startswith("export.card.summary: ") for line in lines), lines
    assert reruns(lines) == {"model_card", "export_model", "smoke_test"} == snakemake_would_run(built)


def test_an_edited_record_names_the_source_and_the_shards(built):
    source = built / "data/demo/spell_digits.jsonl"
    lines = source.read_text().splitlines(keepends=True)
    record = json.loads(lines[7])
    record["completion"] += " (edited)"
    lines[7] = json.dumps(record) + "\n"
    source.write_text("".join(lines))
    out = why(built)
    assert "data source data/demo/spell_digits.jsonl changed" in out
    removed = [line for line in out if line.startswith("data shard") and line.endswith("removed")]
    added = [line for line in out if line.startswith("data shard") and line.endswith("added")]
    assert len(removed) == len(added) and 1 <= len(added) <= 2
    assert {"shard_data", "tokenize_shard", "train_model", "evaluate_model"} <= reruns(out)
    # the demo's records all fit the tokenizer sample: the built model's tokenizer retrains
    assert "tokenizer sample changed (a built model retrains its tokenizer)" in out
    # a dry run cannot plan the per-shard jobs after the shard_data checkpoint: compare with the
    # jobs a real run executes
    assert reruns(out) == set(jobs_run(snakemake(built, "export"))) - {"export"}
    # the work folder is keyed by the spec: checkpoints from the old tokens are not resumed
    log = (built / "logs/runs/demo/train_model.log").read_text()
    assert "the tokens or the base model changed since the checkpoints" in log


def test_a_decoding_edit_also_remerges_since_the_export_carries_the_decoding(built):
    replace_in_spec(built, "max_new_tokens: 16", "max_new_tokens: 20")
    lines = why(built)
    assert "evaluate.max_new_tokens: 16 -> 20" in lines
    assert not [line for line in lines if "export.generation" in line], lines  # not a spec key
    assert reruns(lines) == {"evaluate_model", "merge_model", "model_card", "export_model", "smoke_test"}
    assert reruns(lines) == snakemake_would_run(built)
