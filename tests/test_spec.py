"""The spec compiler: strict validation with located, actionable errors; sweeps; content keys."""

from __future__ import annotations

import copy
import textwrap

import pytest
import yaml

from scripts.compiler.spec import SpecError, artifact_keys, check_slice, load_spec_file, load_specs

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
        # the reference log-probs (dpo) do not depend on beta, only on what the reference computes
        ("train", "dpo", {"beta": 0.5}, {"train"}),
        ("train", "threads", 1, {"train", "reference"}),
        ("tokenize", "max_length", 40, {"tokens", "audit", "reference", "train"}),
        ("data", "split_seed", 3, {"data", "model", "tokens", "audit", "reference", "train"}),
        ("tokenize", "audit", {"examples": 3}, {"audit"}),
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


def demo_text_with(tmp_path, old: str, new: str, name: str = "exp.yaml"):
    text = open(DEMO).read()
    assert old in text
    return write_spec(tmp_path, text.replace(old, new), name)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "learning_rate: 3e-3",
            "learning_rate: .nan",
            r":25: train.learning_rate: \.nan is not a finite number",
        ),
        ("alpha: 32", "alpha: .inf", r"train.lora.alpha: \.inf is not a finite number"),
        ("max_steps: 200", "epochs: -.inf", r"train.epochs: -\.inf is not a finite number"),
        (
            "max_steps: 200",
            "max_steps: 2e2",
            r"train.max_steps: expected an integer, got the float 200.0; write 200 ",
        ),
        (
            "max_steps: 200",
            "max_steps: 200.0",
            r"got the float 200.0; write 200 \(no decimal point or exponent\)",
        ),
        ("max_steps: 200", "max_steps: 2.5", r"train.max_steps: expected an integer, got the float 2.5$"),
        ("num_shards: 4", "num_shards: 4.0", r"data.num_shards: expected an integer, got the float 4.0"),
        (
            "threads: 2",
            "threads: 2\n  seed: 4294967296",
            r"train.seed: 4294967296 is greater than the maximum",
        ),
        ("seed: 0", "seed: -1", r"model.build.seed: -1 is less than the minimum of 0"),
        (
            "threads: 2",
            "threads: 2\n  eval_steps: 5.0",
            r":31: train.eval_steps: expected an integer, got the float",
        ),
        (
            "max_steps: 200",
            "max_steps: 99999999999999999999",
            r"is too large; integers in a spec are at most",
        ),
        ("batch_size: 128", "batch_size: 128\n  seed: 1e3", r"evaluate.seed: expected an integer"),
    ],
)
def test_numbers_are_finite_integers_are_ints_and_seeds_fit(tmp_path, old, new, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec_file(demo_text_with(tmp_path, old, new))


def test_the_largest_seed_torch_accepts_is_accepted(tmp_path):
    (run,) = load_spec_file(demo_text_with(tmp_path, "threads: 2", "threads: 2\n  seed: 4294967295"))
    assert run.sections["train"]["seed"] == 2**32 - 1


def test_non_finite_numbers_anywhere_are_named_with_their_dotted_key(tmp_path):
    path = demo_with(tmp_path, lambda s: s.update(sweep={"train.learning_rate": [1e-3, float("nan")]}))
    with pytest.raises(SpecError, match=r"sweep.train.learning_rate\[1\]: \.nan is not a finite number"):
        load_spec_file(path)
    with pytest.raises(SpecError, match=r"train.max_grad_norm: \.inf is not a finite number"):
        check_slice("train", {"max_steps": 1, "max_grad_norm": float("inf")})  # JSON from a rule


def test_a_validation_split_is_required_for_evaluation(tmp_path):
    zero = demo_text_with(tmp_path, "validation_fraction: 0.1", "validation_fraction: 0")
    with pytest.raises(SpecError, match=r":19: data.validation_fraction: 0 holds out no records"):
        load_spec_file(zero)

    def held_out_source(spec):
        spec["data"]["validation_fraction"] = 0
        spec["data"]["sources"].append({**spec["data"]["sources"][0], "split": "validation"})

    assert load_spec_file(demo_with(tmp_path, held_out_source, "held.yaml"))
    train_only = demo_with(tmp_path, lambda s: s["data"]["sources"][0].update(split="train"), "t.yaml")
    with pytest.raises(SpecError, match="every source has split: train"):
        load_spec_file(train_only)
    assert check_slice("data", {"sources": DEMO_SOURCES, "validation_fraction": 0})  # the data step alone


DEMO_SOURCES = [
    {"path": "data/demo/spell_digits.jsonl", "fields": {"prompt": "prompt", "completion": "completion"}}
]


def alias_bomb(levels: int) -> str:
    lines = ["spec_version: 1", "description:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = write_spec(tmp_path, alias_bomb(9))  # 9**9 values expanded
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}:8: YAML aliases expand the value here to more than 100000 values")
    assert "lol" not in message and len(message) < 400


def test_aliases_are_bounded_in_number_and_never_recursive(tmp_path):
    text = open(DEMO).read() + "x-refs:\n  a: &a 1\n  b: [" + ", ".join(["*a"] * 101) + "]\n"
    with pytest.raises(SpecError, match=r"more than 100 YAML aliases"):
        load_spec_file(write_spec(tmp_path, text))
    with pytest.raises(SpecError, match=r":2: the value here contains an alias to itself"):
        load_spec_file(write_spec(tmp_path, "spec_version: 1\ndescription: &d [x, *d]\n"))
    with pytest.raises(SpecError, match=r"values nested more than 64 levels deep"):
        load_spec_file(write_spec(tmp_path, "description: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_a_few_aliases_are_fine(tmp_path):
    text = open(DEMO).read().replace("  per_device_batch_size: 16", "  per_device_batch_size: &batch 16")
    text = text.replace("  batch_size: 128", "  batch_size: *batch")
    (run,) = load_spec_file(write_spec(tmp_path, text))
    assert run.sections["evaluate"]["batch_size"] == 16


def test_a_spec_over_one_mib_is_refused_before_parsing(tmp_path):
    path = write_spec(tmp_path, open(DEMO).read() + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(
        SpecError, match=rf"the spec is {path.stat().st_size} bytes, over the limit of 1048576"
    ):
        load_spec_file(path)


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = demo_text_with(tmp_path, "threads: 2", "threads: 2\n  learning_rate: 1e-3")
    with pytest.raises(SpecError, match=r":31: train.learning_rate: duplicate key, on lines 25 and 31"):
        load_spec_file(path)
    nested = demo_text_with(tmp_path, "num_heads: 4", "num_heads: 4\n    num_heads: 8")
    with pytest.raises(SpecError, match=r"model.build.num_heads: duplicate key, on lines 9 and 10"):
        load_spec_file(nested)


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = write_spec(tmp_path, "spec_version: 1\nmodel: {build: {}\ntrain: [unclosed\n")
    with pytest.raises(SpecError, match=rf"(?s)^{path}:3: not valid YAML: .*in \"{path}\", line 2"):
        load_spec_file(path)


def test_a_sweep_value_ending_in_a_newline_is_not_a_safe_run_name(tmp_path):
    path = demo_with(tmp_path, lambda s: s.update(sweep={"export.card.summary": ["ok\n"]}))
    with pytest.raises(SpecError, match="not a safe folder name"):
        load_spec_file(path)
    with pytest.raises(SpecError, match="file name is the run name"):
        load_spec_file(demo_with(tmp_path, lambda s: None, name="bad\n.yaml"))


def from_run(name):
    return lambda spec: spec.update(model={"from_run": name})


def test_from_run_links_runs_and_its_key_follows_the_parents_training(tmp_path):
    sft = demo_with(tmp_path, lambda s: s.update(sweep={"train.learning_rate": [0.001, 0.002]}), "sft.yaml")
    dpo = demo_with(tmp_path, from_run("sft--train.learning_rate=0.002"), "dpo.yaml")
    runs = {run.name: run for run in load_specs([sft, dpo])}
    assert runs["dpo"].parent is runs["sft--train.learning_rate=0.002"]
    one, two = runs["sft--train.learning_rate=0.001"], runs["sft--train.learning_rate=0.002"]
    assert runs["dpo"].keys["model"] != one.keys["model"]  # not the parent's base: its tuned model
    before = runs["dpo"].keys["model"]
    runs["dpo"].parent = one  # another parent training: another base
    assert runs["dpo"].keys["model"] != before and one.keys["model"] == two.keys["model"]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            {"dpo": from_run("sfy")},
            "model.from_run: no run named 'sfy' among the specs loaded.*did you mean 'sft'",
        ),
        ({"dpo": from_run("dpo")}, "model.from_run makes a cycle: dpo -> dpo"),
        ({"a": from_run("b"), "b": from_run("a")}, "model.from_run makes a cycle: a -> b -> a"),
        (
            {"dpo": lambda s: s.update(model={"from_run": "sft", "path": "x"})},
            "give exactly one of model.id .* or model.from_run",
        ),
        (
            {"dpo": lambda s: s.update(model={"from_run": "sft", "trust_remote_code": True})},
            r"model.from_run: takes no other model keys.*remove \['trust_remote_code'\]",
        ),
    ],
)
def test_from_run_errors_name_the_fix(tmp_path, specs, message):
    paths = [demo_with(tmp_path, lambda s: None, "sft.yaml")]
    paths += [demo_with(tmp_path, edit, f"{name}.yaml") for name, edit in specs.items()]
    with pytest.raises(SpecError, match=message):
        load_specs(paths)
