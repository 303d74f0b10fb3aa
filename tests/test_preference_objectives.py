"""ORPO, SimPO and KTO through the real workflow: `snakemake train` on the demo's records made into
preference data (chosen: the digits spelled in order; rejected: the same words reversed): ORPO
on a chat prompt with text responses, SimPO on explicit {prompt, chosen, rejected} texts, DPO on
chat pairs here (explicit and implicit {chosen, rejected} pairs: tests/test_preference_training.py),
KTO on its own {prompt, completion, label} records (half of them undesirable) as well as on pairs.
Each objective trains once on LoRA (the token shards of a record shape are the same whatever the
objective), full fine-tuning for KTO (whose reference is then a frozen copy of the base). The loss falls, the policy comes to
prefer the chosen answers where the trainer measures it, and the saved model reloads. The runs
are the session's preference build (tests/preference_fixtures.py: preference_build), which also
trains the DPO runs of tests/test_preference_training.py; tests read it and change nothing.

The spec errors of bad combinations run fast (no training) and are not marked slow; the KTO
record shape itself: tests/test_kto_records.py."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.preference_fixtures import DPO_RUNS, RUNS, STEPS, read_log
from tests.workflow_fixtures import REPO, build_jobs


@pytest.fixture(scope="module")
def trained(preference_build):
    return preference_build, build_jobs(preference_build)


def losses(log: list[dict]) -> list[float]:
    return [e["loss"] for e in log if "loss" in e]


@pytest.mark.slow
def test_every_run_trains_and_its_loss_falls(trained):
    workdir, ran = trained
    assert ran["train_model"] == len(RUNS) + len(DPO_RUNS)  # the shared build: these runs and DPO's
    for run, (objective, *_) in RUNS.items():
        log = read_log(workdir, run)
        curve = losses(log)
        assert len(curve) == STEPS // 5, (run, log)
        # the mean of the last three logged losses below the first: robust to one noisy batch
        assert sum(curve[-3:]) / 3 < curve[0], (run, curve)
        manifest = json.loads((workdir / f"results/runs/{run}/train.manifest.json").read_text())
        assert manifest["spec"]["objective"] == objective and manifest["counts"]["steps"] == STEPS
        assert manifest["counts"]["train_tokens"] > 0, run
        print(f"{run}: loss {curve[0]:.3f} -> {curve[-1]:.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("run", [r for r, (objective, *_) in RUNS.items() if objective != "kto"])
def test_orpo_and_simpo_come_to_prefer_the_chosen_answers(trained, run):
    workdir, _ = trained
    steps = [e for e in read_log(workdir, run) if "rewards/accuracies" in e]
    first, last = steps[0], steps[-1]
    assert last["rewards/margins"] > first["rewards/margins"], (run, first, last)
    late = sum(e["rewards/accuracies"] for e in steps[-3:]) / 3
    assert late > first["rewards/accuracies"], (run, first, steps[-3:])
    if run.startswith("orpo"):  # ORPO: an SFT loss on the chosen answer plus the odds-ratio term
        assert last["nll_loss"] < first["nll_loss"], (run, first, last)
        assert last["logps/chosen"] > first["logps/chosen"], (run, first, last)


@pytest.mark.slow
@pytest.mark.parametrize("run", [r for r, (objective, *_) in RUNS.items() if objective == "kto"])
def test_kto_raises_the_desirable_rewards_above_the_undesirable(trained, run):
    workdir, _ = trained
    log = read_log(workdir, run)
    steps = [e for e in log if "rewards/chosen" in e and "rewards/rejected" in e]
    first, last = steps[0], steps[-1]
    assert last["rewards/margins"] > first["rewards/margins"], (run, first, last)
    assert all(e["kl"] >= 0 for e in steps), log
    if run != "kto_pairs":  # KTO records: undesirable answers in digits, easy to tell apart
        assert last["rewards/chosen"] > 0 > last["rewards/rejected"], (run, last)


@pytest.mark.slow
def test_kto_shards_carry_the_labels(trained):
    import pyarrow as pa
    import pyarrow.parquet as pq

    workdir, _ = trained
    manifest = json.loads((workdir / "results/runs/kto_labelled/train.manifest.json").read_text())
    paths = [i["path"] for i in manifest["inputs"] if i["path"].endswith(".parquet")]
    tokens = [pq.read_table(workdir / p) for p in paths]
    table = pa.concat_tables(tokens)
    assert table.schema.field("label").type == pa.bool_()
    labels = table["label"].to_pylist()
    assert 0.4 < sum(labels) / len(labels) < 0.6  # half the records were written undesirable
    # pairs made into KTO examples: two per pair, the shards hold the pairs
    pairs = json.loads((workdir / "results/runs/kto_pairs/train.manifest.json").read_text())
    paths = [i["path"] for i in pairs["inputs"] if i["path"].endswith(".parquet")]
    splits = [pq.read_table(workdir / p, columns=["split"]) for p in paths]
    train_pairs = sum(table["split"].to_pylist().count("train") for table in splits)
    assert pairs["counts"]["examples"] == 2 * train_pairs


@pytest.mark.slow
@pytest.mark.parametrize("run", ["orpo_chat", "simpo_explicit", "kto_labelled"])
def test_the_lora_adapter_reloads_and_answers(trained, run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    workdir, _ = trained
    adapter = workdir / f"results/runs/{run}/train/model"
    assert not (adapter / "ref").exists() and (adapter / "adapter_model.safetensors").is_file()
    base = workdir / json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    ids = tokenizer("Spell 42:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.mark.slow
def test_the_full_kto_model_reloads_and_moved_from_the_base(trained):
    import torch
    from transformers import AutoModelForCausalLM

    workdir, _ = trained
    tuned = AutoModelForCausalLM.from_pretrained(workdir / "results/runs/kto_full/train/model").eval()
    # kto_full trains on kto_labelled's data, so both start from the same base
    adapter_config = workdir / "results/runs/kto_labelled/train/model/adapter_config.json"
    base = AutoModelForCausalLM.from_pretrained(
        workdir / json.loads(adapter_config.read_text())["base_model_name_or_path"]
    ).eval()
    moved = [
        name
        for (name, p), (_, q) in zip(tuned.named_parameters(), base.named_parameters())
        if not torch.equal(p, q)
    ]
    assert len(moved) == len(list(base.parameters())), moved  # every weight trained (full)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.isfinite(tuned(input_ids=ids).logits).all()


# spec errors at DAG-build time: fast, no training


def demo_spec(**edits) -> dict:
    spec = yaml.safe_load((REPO / "specs/demo.yaml").read_text())
    for dotted, value in edits.items():
        section, key = dotted.split("__")
        spec[section][key] = value
    return spec


PAIR_SOURCE = [
    {
        "path": "data/demo/spell_digits.jsonl",
        "fields": {"prompt": "prompt", "chosen": "completion", "rejected": "completion"},
    }
]
LABEL_SOURCE = [
    {
        "path": "data/demo/spell_digits.jsonl",
        "fields": {"prompt": "prompt", "completion": "completion", "label": "completion"},
    }
]
PLAIN_SOURCE = [
    {"path": "data/demo/spell_digits.jsonl", "fields": {"prompt": "prompt", "completion": "completion"}}
]


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            {"train__objective": "orpo"},
            "train.objective: orpo trains on preference pairs, but data.sources map no chosen",
        ),
        (
            {"train__objective": "simpo"},
            "train.objective: simpo trains on preference pairs, but data.sources map no chosen",
        ),
        (
            {"train__objective": "simpo", "data__sources": LABEL_SOURCE},
            "train.objective: simpo trains on preference pairs, but data.sources map KTO records .* use train.objective: kto",
        ),
        (
            {"train__objective": "kto"},
            "train.objective: kto trains on completions labelled desirable or not, but data.sources map no label",
        ),
        (
            {"data__sources": LABEL_SOURCE},
            "train.objective: sft would train on the undesirable completions of KTO records",
        ),
        (
            {"data__sources": PLAIN_SOURCE + LABEL_SOURCE, "train__objective": "kto"},
            "data.sources: KTO records \\(field label\\) cannot be mixed with other record shapes",
        ),
        (
            {"train__orpo": {"beta": 0.2}},
            "train.orpo: applies to objective orpo, but train.objective is 'sft'; remove train.orpo",
        ),
        (
            {"train__objective": "orpo", "train__kto": {"beta": 0.2}, "data__sources": PAIR_SOURCE},
            "train.kto: applies to objective kto, but train.objective is 'orpo'",
        ),
        (
            {"train__objective": "kto", "train__simpo": {"gamma": 1.0}, "data__sources": PAIR_SOURCE},
            "train.simpo: applies to objective simpo, but train.objective is 'kto'",
        ),
        (
            {"train__objective": "kto", "train__per_device_batch_size": 1, "data__sources": LABEL_SOURCE},
            "train.per_device_batch_size: kto estimates its KL term from the other examples of a batch",
        ),
        (
            {"train__objective": "simpo", "train__simpo": {"gamma": -1}, "data__sources": PAIR_SOURCE},
            "train.simpo.gamma",
        ),
        (
            {"train__objective": "orpo", "train__orpo": {"beta": 0}, "data__sources": PAIR_SOURCE},
            "train.orpo.beta",
        ),
        (
            {"train__objective": "kto", "train__kto": {"desirable_weight": 0}, "data__sources": LABEL_SOURCE},
            "train.kto.desirable_weight",
        ),
    ],
)
def test_bad_combinations_fail_at_dag_build_time(tmp_path, edits, expected):
    from scripts.compiler.spec import SpecError, load_specs

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(demo_spec(**edits), sort_keys=False))
    with pytest.raises(SpecError, match=expected):
        load_specs([str(path)])


@pytest.mark.parametrize(
    ("objective", "sources"),
    [("orpo", PAIR_SOURCE), ("simpo", PAIR_SOURCE), ("kto", PAIR_SOURCE), ("kto", LABEL_SOURCE)],
)
def test_each_objective_accepts_its_shapes_with_its_block_defaulted(tmp_path, objective, sources):
    from scripts.compiler.spec import load_specs
    from scripts.train_model import load_train_slice

    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(demo_spec(train__objective=objective, data__sources=sources), sort_keys=False)
    )
    (run,) = load_specs([str(path)])
    train = load_train_slice(json.dumps(run.sections["train"]))
    defaults = {"orpo": {"beta": 0.1}, "simpo": {"beta": 2.0, "gamma": 0.5, "cpo_alpha": 0.0}}
    defaults["kto"] = {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert train[objective] == defaults[objective]
    assert not {"dpo", "orpo", "simpo", "kto"} - {objective} & set(train)
