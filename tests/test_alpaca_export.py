"""The alpaca shape end to end: a client sends the standard alpaca prompt, with its trailing
newline after `### Response:`, and the exported model answers it through a plain `pipeline()`.
(Whitespace normalisation used to strip that newline from the training prompts, so the export
answered the standard prompt with EOS at once and its smoke test failed.)"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow_fixtures import snakemake

pytestmark = pytest.mark.slow
ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nSpell the number.\n\n### Input:\n{number}\n\n### Response:\n"
)


def test_the_standard_alpaca_prompt_gets_its_answer_from_the_export(workflow):
    from transformers import pipeline

    rows = [json.loads(line) for line in (workflow / "data/demo/spell_digits.jsonl").read_text().splitlines()]
    records = [
        {"instruction": "Spell the number.", "input": r["prompt"][6:-1], "output": r["completion"]}
        for r in rows
    ]
    (workflow / "data/alpaca.json").write_text(json.dumps(records))
    spec = yaml.safe_load((workflow / "specs/demo.yaml").read_text())
    spec["model"]["build"]["max_position_embeddings"] = 128
    fields = {"instruction": "instruction", "input": "input", "output": "output"}
    spec["data"]["sources"] = [{"path": "data/alpaca.json", "fields": fields}]
    spec["tokenize"]["max_length"] = 96
    # the long prompt takes longer to learn than the demo's: full fine-tuning learns it in 250
    # steps (measured: 5 of the 10 numbers below right, exact match 0.69 on the validation split),
    # where the demo's LoRA needed 600 (at 250 steps and learning rate 6e-3: 1 of 10)
    spec["train"] = {**spec["train"], "method": "full", "max_steps": 250, "learning_rate": 2e-3}
    spec["train"].pop("lora")
    spec["export"]["format"] = "merged"
    spec["evaluate"]["max_examples"] = 32
    prompt = ALPACA.format(number="9051")
    spec["export"]["smoke_prompts"] = [{"prompt": prompt}]  # an answer, not EOS at once
    (workflow / "specs/demo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    snakemake(workflow, "export")  # the smoke test sends the standard prompt too

    train_prompt = json.loads(next((workflow / "results/data").glob("*/raw/*.jsonl")).open().readline())
    assert train_prompt["prompt"].endswith("### Response:\n")
    generator = pipeline("text-generation", model=str(workflow / "results/runs/demo/export"))
    words = "zero one two three four five six seven eight nine".split()
    numbers = ["4096", "1234", "8073", "555", "90210", "77", "3141", "2718", "6020", "199"]
    answers = [
        generator(ALPACA.format(number=n))[0]["generated_text"].removeprefix(ALPACA.format(number=n)).strip()
        for n in numbers
    ]
    assert all(answers), answers  # the standard prompt is answered, never with EOS at once
    right = [a == " ".join(words[int(d)] for d in n) for n, a in zip(numbers, answers)]
    assert sum(right) >= 4, list(zip(numbers, answers))  # the tiny model gets many of them
