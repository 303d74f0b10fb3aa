"""The preference build the preference training tests read (registered as a plugin in
tests/conftest.py): `preference_build`, once per test session (shared by the xdist workers),
`snakemake train` on the demo's records made into preference data (chosen: the digits spelled in
order; rejected: the same words reversed) in every record shape: the DPO runs of
tests/test_preference_training.py (DPO_RUNS) and the ORPO, SimPO, KTO and chat-DPO runs of
tests/test_preference_objectives.py (RUNS). The two modules' runs share their data files, so
their data steps and base models are built once. Tests read it and never change it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.workflow_fixtures import REPO, shared_build


def rejected_answer(words: list[str]) -> str:
    """The rejected answer of a pair: the chosen answer's words reversed (doubled where reversing
    changes nothing, so that the two always differ)."""
    flipped = list(reversed(words))
    return " ".join(flipped if flipped != words else words + words)


STEPS = 60
ORPO = {"orpo": {"beta": 1.0}}  # the odds-ratio term weighed up beside the SFT loss of a random base
PAIRS = {"q": "prompt", "good": "chosen", "bad": "rejected"}
# run -> (objective, data file, fields, train overrides). Every objective trains once on LoRA and
# every record shape is trained once: the shards hold each pair tokenized already (tokenize_shard),
# the same token shards whatever the objective (tests/test_preference_training.py checks that
# simpo_explicit trains on dpo_lora's shards), so a second shape under one objective trains on
# nothing new. The shapes themselves: tests/test_preference_records.py and the tokenize tests.
RUNS = {
    "orpo_chat": ("orpo", "chat", {"conv": "messages", "good": "chosen", "bad": "rejected"}, ORPO),
    # DPO on explicit and implicit pairs: tests/test_preference_training.py; on chat pairs here
    "dpo_chat": ("dpo", "chat", {"conv": "messages", "good": "chosen", "bad": "rejected"}, {}),
    "simpo_explicit": ("simpo", "explicit", PAIRS, {}),
    "kto_labelled": ("kto", "labelled", {"q": "prompt", "a": "completion", "ok": "label"}, {}),
    "kto_pairs": ("kto", "explicit", PAIRS, {}),
    "kto_full": (
        "kto",
        "labelled",
        {"q": "prompt", "a": "completion", "ok": "label"},
        {"method": "full"},
    ),
}


def read_log(workdir, run: str) -> list[dict]:
    path = workdir / f"results/runs/{run}/train/log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def demo_rows(workdir) -> list[dict]:
    lines = (workdir / "data/demo/spell_digits.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["completion"].strip()]  # the demo's empty answers out


def write_data(workdir) -> None:
    explicit, chat, implicit, labelled = [], [], [], []
    for i, r in enumerate(demo_rows(workdir)):
        rejected = rejected_answer(r["completion"].split())
        explicit.append({"q": r["prompt"], "good": r["completion"], "bad": rejected})
        chat.append(
            {"conv": [{"role": "user", "content": r["prompt"]}], "good": r["completion"], "bad": rejected}
        )
        implicit.append({"c": f"{r['prompt']} {r['completion']}", "r": f"{r['prompt']} {rejected}"})
        # KTO records as a user has them: one completion per prompt, rated desirable or not
        # (undesirable: the number in digits, not spelled; CSV-style text labels on some rows,
        # JSON booleans on the others)
        good = i % 2 == 0
        label = good if i % 3 else ("True" if good else "false")
        digits = " ".join(r["prompt"].removeprefix("Spell ").removesuffix(":"))
        labelled.append({"q": r["prompt"], "a": r["completion"] if good else digits, "ok": label})
    for name, rows in (
        ("explicit", explicit),
        ("chat", chat),
        ("implicit", implicit),
        ("labelled", labelled),
    ):
        (workdir / f"data/{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    shutil.copy(REPO / "tests/data/chat_template.jinja", workdir / "data/chat_template.jinja")


def run_spec(demo: dict, objective: str, data: str, fields: dict, overrides: dict) -> dict:
    train = {
        **demo["train"],
        "objective": objective,
        "max_steps": STEPS,
        "learning_rate": 1e-3,  # 3e-3 (the demo's) makes SimPO and KTO unstable
        "logging_steps": 5,
        "save_steps": 100,
    }
    spec = {**demo, "train": {**train, **overrides}}
    if overrides.get("method") == "full":
        spec["train"].pop("lora")
        spec["export"] = {**spec["export"], "format": "merged"}
    source = {"path": f"data/{data}.jsonl", "fields": {role: column for column, role in fields.items()}}
    spec["data"] = {**demo["data"], "sources": [source]}
    if data == "chat":
        spec["tokenize"] = {**demo["tokenize"], "chat_template_file": "data/chat_template.jinja"}
    return spec


# tests/test_preference_training.py: DPO, 40 steps at the demo's learning rate (3e-3), LoRA and
# QLoRA (bitsandbytes' CPU 4-bit) on explicit pairs, full fine-tuning on implicit ones.
# run -> (fields: column -> role, data file, train overrides)
DPO_RUNS = {
    "dpo_lora": ({"q": "prompt", "good": "chosen", "bad": "rejected"}, "explicit", {}),
    "dpo_full": ({"c": "chosen", "r": "rejected"}, "implicit", {"method": "full", "learning_rate": 1e-3}),
    "dpo_qlora": ({"q": "prompt", "good": "chosen", "bad": "rejected"}, "explicit", {"method": "qlora"}),
}


def dpo_spec(demo: dict, columns: dict, data: str, overrides: dict) -> dict:
    train = {**demo["train"], "objective": "dpo", "max_steps": 40, "logging_steps": 5, "save_steps": 20}
    spec = {**demo, "train": {**train, **overrides, "dpo": {"beta": 0.1}}}
    if overrides.get("method") == "full":
        spec["train"].pop("lora")
        spec["export"] = {**spec["export"], "format": "merged"}
    fields = {role: column for column, role in columns.items()}
    spec["data"] = {**demo["data"], "sources": [{"path": f"data/{data}.jsonl", "fields": fields}]}
    return spec


def write_specs(workdir: Path) -> None:
    write_data(workdir)
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    (workdir / "specs/demo.yaml").unlink()
    for name, (objective, data, fields, overrides) in RUNS.items():
        spec = run_spec(demo, objective, data, fields, overrides)
        (workdir / f"specs/{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for name, (columns, data, overrides) in DPO_RUNS.items():
        spec = dpo_spec(demo, columns, data, overrides)
        (workdir / f"specs/{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture(scope="session")
def preference_build(tmp_path_factory) -> Path:
    return shared_build(tmp_path_factory, "preferences", "train", prepare=write_specs)
