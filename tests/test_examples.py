"""The example specs for real models (examples/): each compiles and dry-runs, and its data steps
(shards, cleaning, base model, tokens, audit) run on local stand-ins of its hub models, so the
seed's tips hold on realistic inputs: the pad token set when the tokenizer has none (TinyLlama,
SmolLM2), the records rendered as the model expects (the alpaca prompt; Qwen's own ChatML
template with its default system prompt), the loss on the answers only.

The stand-ins (tests/hub_models.py) live in a temporary Hugging Face cache laid out as
huggingface_hub lays it out; snakemake runs with HF_HUB_CACHE pointing there and
HF_HUB_OFFLINE=1, so `model.id: TinyLlama/TinyLlama-1.1B-Chat-v1.0` resolves without a network.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.hub_models import QWEN_SYSTEM, build_hub_cache
from tests.workflow_fixtures import REPO, copy_workflow, jobs_run, snakemake

EXAMPLES = {
    "tinyllama_qlora": ["examples/tinyllama_qlora.yaml"],
    "qwen_chat_lora": ["examples/qwen_chat_lora.yaml"],
    "smollm2_full": ["examples/smollm2_full.yaml"],
    "sft_then_dpo": ["examples/qwen_chat_lora.yaml", "examples/qwen_dpo.yaml"],
    "slurm_sweep": ["examples/slurm_sweep.yaml"],
}
ALL_SPECS = sorted({spec for specs in EXAMPLES.values() for spec in specs})
_DRY_JOB = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):", re.MULTILINE)


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    """The environment snakemake runs in: a hub cache holding the example models, offline."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    build_hub_cache(cache, REPO / "examples/data")
    saved = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_every_example_spec_is_in_the_table():
    demo_based = {"examples/dpo_style.yaml", "examples/demo_benchmarks.yaml"}  # tested with the demo
    on_disk = {f"examples/{p.name}" for p in (REPO / "examples").glob("*.yaml")} - demo_based
    assert on_disk == set(ALL_SPECS)
    readme = (REPO / "README.md").read_text()
    for spec in ALL_SPECS:
        assert spec in readme, spec


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_dry_runs(name, tmp_path):
    """`snakemake -n export --config specs=...` plans every step of every run."""
    workdir = copy_workflow(tmp_path / "wf")
    specs = ",".join(EXAMPLES[name])
    proc = snakemake(workdir, "-n", "export", "--config", f"specs={specs}", timeout=300)
    planned = _DRY_JOB.findall(proc.stdout + proc.stderr)
    runs = {"slurm_sweep": 3, "sft_then_dpo": 2}.get(name, 1)
    assert planned.count("train_model") == runs, planned
    assert planned.count("evaluate_model") == planned.count("smoke_test") == runs, planned
    if name == "slurm_sweep":  # three runs, one set of data: the shards are tokenized once
        assert planned.count("shard_data") == 1 and planned.count("audit_data") == 1, planned
    if name == "sft_then_dpo":  # the DPO run's base is the SFT run's model; reference once
        assert planned.count("base_model") == 2 and planned.count("reference_logps") == 1, planned


@pytest.fixture(scope="module")
def data_build(hub_env, tmp_path_factory):
    """`snakemake data` on every example at once (the sweep's three runs share one set of
    tokens); the DPO run's tokens need its base, the SFT run's merged model, so that run trains
    (a few steps of the tiny stand-in)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("examples") / "wf")
    proc = snakemake(workdir, "data", "--config", "specs=" + ",".join(ALL_SPECS), timeout=900)
    return workdir, proc


def manifests(workdir, pattern):
    return {str(p.relative_to(workdir)): json.loads(p.read_text()) for p in workdir.glob(pattern)}


def base_of(workdir, model_id) -> dict:
    (found,) = [
        m
        for m in manifests(workdir, "results/models/*/model.manifest.json").values()
        if m["details"].get("weights") == model_id
    ]
    return found


def audit_text(workdir, needle: str) -> str:
    """The audit examples.txt that contains `needle`."""
    (text,) = [p.read_text() for p in workdir.glob("results/audit/*/examples.txt") if needle in p.read_text()]
    return text


@pytest.mark.slow
def test_data_steps_run_on_every_example(data_build):
    workdir, proc = data_build
    jobs = jobs_run(proc)
    # tinyllama, qwen chats (qwen_chat_lora and the sweep), smollm2, the DPO pairs
    assert jobs["shard_data"] == 4 and jobs["audit_data"] == 4, jobs
    assert jobs["train_model"] == 1, jobs  # the SFT run the DPO run starts from
    for manifest in manifests(workdir, "results/audit/*.manifest.json").values():
        assert manifest["details"]["problems"] == [] and manifest["counts"]["failed"] == {}


@pytest.mark.slow
def test_a_missing_pad_token_is_set_and_recorded(data_build):
    workdir, _ = data_build
    tinyllama = base_of(workdir, "TinyLlama/TinyLlama-1.1B-Chat-v1.0")["details"]
    assert tinyllama["pad_token_added"] is True and tinyllama["pad_token"] == "<unk>"
    smol = base_of(workdir, "HuggingFaceTB/SmolLM2-135M")["details"]
    assert smol["pad_token_added"] is True and smol["pad_token"] == "<|endoftext|>"
    qwen = base_of(workdir, "Qwen/Qwen2.5-0.5B-Instruct")["details"]
    assert qwen["pad_token_added"] is False and qwen["pad_token"] == "<|endoftext|>"


@pytest.mark.slow
def test_alpaca_records_get_the_alpaca_prompt_and_the_loss_on_the_response(data_build):
    workdir, _ = data_build
    text = audit_text(workdir, "### Instruction:")
    example = re.search(
        r"^⟪<s> ?Below is an instruction.*?### Response:\n⟫(.+?)</s>$", text, re.DOTALL | re.MULTILINE
    )
    assert example, text[:2000]
    assert "⟪" not in example.group(1)  # the response and its </s> are trained on


@pytest.mark.slow
def test_chats_use_qwens_own_template_with_its_default_system_prompt(data_build):
    """The chat tokens (qwen_chat_lora and the sweep share them) and the DPO pairs' chat prompts
    are rendered with Qwen's ChatML template, its default system prompt included."""
    workdir, _ = data_build
    texts = [p.read_text() for p in workdir.glob("results/audit/*/examples.txt")]
    chatml = [text for text in texts if "<|im_start|>" in text]
    assert len(chatml) == 2
    for text in chatml:
        assert f"⟪<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n" in text, text[:2000]
        # an assistant turn is trained on up to and including its <|im_end|>; the header is masked
        assert re.search(r"<\|im_start\|>assistant\n⟫[^⟪⟫]+<\|im_end\|>", text), text[:2000]


@pytest.mark.slow
def test_the_dpo_run_starts_from_the_sft_run_with_its_template(data_build):
    workdir, _ = data_build
    (dpo_base,) = [
        m
        for m in manifests(workdir, "results/models/*/model.manifest.json").values()
        if m["details"]["source"] == "from_run"
    ]
    assert dpo_base["details"]["parent_run"] == {"run": "qwen_chat_lora", "method": "lora"}
    text = audit_text(workdir, "One word.")  # the pairs' chat prompts, rendered in ChatML
    assert f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nCapital of" in text, text[:2000]


def test_the_examples_data_files_are_small_and_valid():
    for path in sorted((REPO / "examples/data").iterdir()):
        assert path.stat().st_size < 20_000, path
        text = path.read_text()
        records = (
            json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]
        )
        assert 20 <= len(records) <= 60, path
