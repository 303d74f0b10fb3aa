"""The spec compiler: strict validation with located, actionable errors; sweeps; content keys."""

from __future__ import annotations

import copy
import textwrap

import pytest
import yaml

from scripts.common.spec import SpecError, artifact_keys, load_spec_file, load_specs

DEMO = "specs/demo.yaml"


def write_spec(tmp_path, text: str, name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def demo_with(tmp_path, edit, name="exp.yaml"):
    spec = yaml.safe_load(open(DEMO))
    edit(spec)
    return write_spec(tmp_path, yaml.safe_dump(spec, sort_keys=False), name)


def test_demo_spec_compiles_with_defaults_filled():
    (run,) = load_specs([DEMO])
    assert run.name == "demo"
    assert run.sections["train"]["learning_rate"] == pytest.approx(3e-3)
    assert run.sections["train"]["optimizer"] == "adamw_torch"  # default filled
    assert run.sections["data"]["sources"][0]["on_error"] == "fail"  # default inside a list
    assert run.sections["evaluate"]["exact_match"]["strip"] is True


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    path = demo_with(tmp_path, lambda s: s["train"].update(learning_rat=0.1))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    message = str(err.value)
    assert "train.learning_rat: unknown key; did you mean 'learning_rate'?" in message
    line = message.split(":")[1]
    assert path.read_text().splitlines()[int(line) - 1].strip().startswith("learning_rat")


def test_quoted_learning_rate_is_an_error_with_the_fix(tmp_path):
    text = open(DEMO).read().replace("learning_rate: 3e-3", 'learning_rate: "3e-4"')
    path = write_spec(tmp_path, text)
    with pytest.raises(
        SpecError, match=r"train.learning_rate: expected number, got the string '3e-4'; write"
    ):
        load_spec_file(path)


def test_unquoted_scientific_notation_is_a_float(tmp_path):
    text = open(DEMO).read().replace("learning_rate: 3e-3", "learning_rate: 5e-4")
    (run,) = load_spec_file(write_spec(tmp_path, text))
    assert run.sections["train"]["learning_rate"] == 5e-4
    assert isinstance(run.sections["train"]["learning_rate"], float)


def test_wrong_type_and_bad_enum_are_named(tmp_path):
    path = demo_with(tmp_path, lambda s: s["train"].update(max_steps="many", optimizer="adamw_torc"))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert "train.max_steps: expected integer, got the string 'many'" in str(err.value)
    assert "train.optimizer: 'adamw_torc' is not one of" in str(err.value)
    assert "did you mean 'adamw_torch'" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["model"].update(id="org/name"), "give exactly one of model.id"),
        (lambda s: s["train"].update(epochs=1), "set exactly one of train.max_steps or train.epochs"),
        (lambda s: s["data"]["sources"][0].update(path="../secret.jsonl"), "must be a relative path inside"),
        (
            lambda s: s["data"]["sources"][0]["fields"].pop("completion"),
            "map either text, or prompt and completion",
        ),
        (lambda s: s["train"].update(per_device_batch_size=0), "train.per_device_batch_size: 0 is less than"),
    ],
)
def test_semantic_errors(tmp_path, edit, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec_file(demo_with(tmp_path, edit))


def test_bad_run_name_is_refused(tmp_path):
    with pytest.raises(SpecError, match="file name is the run name"):
        load_spec_file(demo_with(tmp_path, lambda s: None, name="-bad name.yaml"))


def test_sweep_expands_into_named_runs_sharing_data_keys(tmp_path):
    def edit(spec):
        spec["sweep"] = {"train.learning_rate": [3e-4, 1e-3], "train.lora.r": [8, 16]}

    runs = load_spec_file(demo_with(tmp_path, edit))
    names = [r.name for r in runs]
    assert names == [
        "exp--train.learning_rate=0.0003--train.lora.r=8",
        "exp--train.learning_rate=0.0003--train.lora.r=16",
        "exp--train.learning_rate=0.001--train.lora.r=8",
        "exp--train.learning_rate=0.001--train.lora.r=16",
    ]
    assert len({r.keys["tokens"] for r in runs}) == 1
    assert len({r.keys["train"] for r in runs}) == 4


def test_sweep_of_an_unknown_key_fails(tmp_path):
    path = demo_with(tmp_path, lambda s: s.update(sweep={"train.learnin_rate": [0.1]}))
    with pytest.raises(SpecError, match="did you mean 'learning_rate'"):
        load_spec_file(path)


def test_keys_change_only_downstream_of_the_edited_section():
    (run,) = load_specs([DEMO])
    base = artifact_keys(run.sections)
    for section, field, value, changed in [
        ("evaluate", "batch_size", 7, set()),
        ("export", "dtype", "fp16", set()),
        ("train", "learning_rate", 0.01, {"train"}),
        ("tokenize", "max_length", 40, {"tokens", "train"}),
        ("data", "split_seed", 3, {"data", "model", "tokens", "train"}),
    ]:
        sections = copy.deepcopy(run.sections)
        sections[section][field] = value
        keys = artifact_keys(sections)
        assert {k for k in keys if keys[k] != base[k]} == changed, section


def test_duplicate_run_names_across_files_fail(tmp_path):
    one = demo_with(tmp_path, lambda s: s.update(sweep={"train.seed": [1]}), "a.yaml")
    two = write_spec(tmp_path, open(DEMO).read(), "a--train.seed=1.yaml")
    with pytest.raises(SpecError, match="comes from both"):
        load_specs([one, two])


def test_sweep_values_make_safe_run_names(tmp_path):
    def edit(spec):
        spec["sweep"] = {"train.lora.target_modules": [["q_proj", "v_proj"]]}

    (run,) = load_spec_file(demo_with(tmp_path, edit))
    assert run.name == "exp--train.lora.target_modules=q_proj+v_proj"
    unsafe = demo_with(tmp_path, lambda s: s.update(sweep={"export.card.summary": ["../../x"]}), "u.yaml")
    with pytest.raises(SpecError, match="not a safe folder name"):
        load_spec_file(unsafe)
