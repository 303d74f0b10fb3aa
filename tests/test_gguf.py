"""GGUF export: real files written with the gguf package, loaded back by transformers alone.

The model is the demo's shape (a tiny Llama whose byte-level BPE tokenizer splits digits, built
by scripts.base_model.train_tokenizer), trained for a few seconds on the demo data so that its
predictions are confident, as a tuned model's are; a second tokenizer is GPT-2 style.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from scripts.compiler.gguf_rules import GGUFError, llama_cpp_pre
from scripts.compiler.spec import SpecError, load_specs
from scripts.gguf.modelfile import RAW_TEMPLATE, go_template, render_go, render_jinja

DATA = "data/demo/spell_digits.jsonl"
SMOKE = [{"prompt": "Spell 9051:", "expected": "nine zero five one"}, {"prompt": "Spell 66:"}]
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]


def demo_records():
    with open(DATA, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_briefly(model, tokenizer, records, steps=120):
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = [r["prompt"] + " " + r["completion"] + tokenizer.eos_token for r in records]
    for step in range(steps):
        batch = tokenizer(texts[(step * 16) % len(texts) :][:16], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def build_merged(folder, tokenizer, records):
    """A merged-model folder as merge_model writes one: safetensors, config, tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=512,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = train_briefly(LlamaForCausalLM(config), tokenizer, records)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def validation_shard(path, tokenizer, records):
    """A token shard as tokenize_shard writes one (prompt with BOS, completion, EOS)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, r in enumerate(records):
        prompt = tokenizer(r["prompt"])["input_ids"]
        completion = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
        rows.append(
            {
                "id": f"{i:06d}",
                "split": "validation",
                "input_ids": prompt + completion + [tokenizer.eos_token_id],
                "prompt_length": len(prompt),
                "prompt": r["prompt"],
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    from scripts.base_model import train_tokenizer

    records = demo_records()
    root = tmp_path_factory.mktemp("gguf")
    tokenizer = train_tokenizer([r["prompt"] + " " + r["completion"] for r in records[:1500]], 512)
    merged = build_merged(root / "merged", tokenizer, records[:1500])
    shard = validation_shard(root / "validation.parquet", tokenizer, records[-200:])
    return root, merged, shard


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """The demo's built tokenizer alone (what the Modelfile and the spec-time checks read)."""
    from scripts.base_model import train_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([r["prompt"] + " " + r["completion"] for r in demo_records()[:300]], 512).save_pretrained(
        folder
    )
    return folder


def run_step(root, merged, shard, types, name="gguf", chat=False, system=None):
    from scripts.export_gguf import main

    spec = {
        "gguf": {"types": types},
        "smoke_prompts": SMOKE,
        "chat": chat,
        "system": system,
        "max_new_tokens": 8,
    }
    out, manifest = root / name, root / f"{name}.manifest.json"
    main(
        [
            "--spec-json",
            json.dumps(spec),
            "--merged",
            str(merged),
            "--tokens",
            json.dumps([shard]),
            "--out",
            str(out),
            "--manifest",
            str(manifest),
            "--run",
            "demo",
            "--threads",
            "1",
        ]
    )
    return out, json.loads(manifest.read_text())


@pytest.fixture(scope="module")
def exported(demo_model):
    root, merged, shard = demo_model
    return run_step(root, merged, shard, TYPES)


@pytest.mark.slow
def test_every_type_writes_and_reloads_with_the_training_token_ids(exported):
    out, manifest = exported
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile"] + [f"model-{t}.gguf" for t in sorted(TYPES)]
    assert manifest["counts"] == {"files": 6, "types": 5, "records": 200}
    for spec_type, result in manifest["details"]["parity"].items():
        assert result["tokens_equal"] and result["records"] == 200, spec_type


@pytest.mark.slow
def test_f32_is_the_safetensors_model_and_q8_0_nearly(exported):
    parity = exported[1]["details"]["parity"]
    assert parity["f32"]["max_logit_diff"] <= 1e-4
    assert parity["f32"]["next_token_agreement"] == 1.0
    assert parity["f32"]["generations_equal"]
    assert [g["gguf"] for g in parity["f32"]["generations"]][0] == "nine zero five one"
    assert parity["q8_0"]["next_token_agreement"] >= 0.99
    assert parity["q4_0"]["next_token_agreement"] >= 0.9  # README quotes the measured figure
    # 2 layers x 7 matrices, the embedding and the output; the 5 norms stay F32
    assert exported[1]["details"]["tensor_types"]["q8_0"] == {"Q8_0": 16, "F32": 5}


@pytest.mark.slow
def test_a_truncated_or_corrupted_gguf_fails_the_parity_step(demo_model, tmp_path):
    from scripts.export_gguf import check_all, gguf_spec, write_all
    from scripts.gguf.parity import failures

    _, merged, shard = demo_model
    spec = gguf_spec(
        {
            "gguf": {"types": ["f32"]},
            "smoke_prompts": SMOKE,
            "chat": False,
            "system": None,
            "max_new_tokens": 4,
        }
    )
    write_all(spec, merged, tmp_path, "demo")
    path = tmp_path / "model-f32.gguf"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GGUFError, match="model-f32.gguf does not load"):
        check_all(spec, merged, tmp_path, [shard], 1)
    corrupted = bytearray(data)
    corrupted[-4000:-2000] = b"\x7f" * 2000  # weights overwritten: it loads, and answers differently
    path.write_bytes(bytes(corrupted))
    (result,) = check_all(spec, merged, tmp_path, [shard], 1).values()
    assert failures("f32", result) and failures("f32", result)[0].startswith("f32: logits differ by")


def test_the_demo_tokenizer_has_a_llama_cpp_name_and_others_are_refused(tokenizer_folder):
    tokenizer_json = json.loads((tokenizer_folder / "tokenizer.json").read_text())
    assert llama_cpp_pre(tokenizer_json) == "smollm"
    tokenizer_json["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581"}
    with pytest.raises(GGUFError, match="no llama.cpp name"):
        llama_cpp_pre(tokenizer_json)


def demo_with(tmp_path, model: dict | None = None, **export) -> str:
    spec = yaml.safe_load(open("specs/demo.yaml"))
    if model is not None:
        spec["model"] = model
    spec["export"].update(export)
    path = tmp_path / "gguf.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_the_demo_with_gguf_compiles_and_adds_the_step(tmp_path):
    from scripts.compiler.steps import run_steps, step_slices

    (run,) = load_specs([demo_with(tmp_path, gguf={"types": ["f32", "q8_0"]})])
    assert "export_gguf" in run_steps(run.sections)
    assert step_slices(run.sections)["export_gguf"][1] == {
        "gguf": {"types": ["f32", "q8_0"]},
        "smoke_prompts": run.sections["export"]["smoke_prompts"],
        "chat": False,
        "system": None,
        "max_new_tokens": 16,
    }
    (plain,) = load_specs(["specs/demo.yaml"])
    assert "export_gguf" not in run_steps(plain.sections)


def test_an_unsupported_architecture_is_refused_at_spec_time(tmp_path):
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    folder.mkdir()
    GPT2Config(n_layer=1, n_embd=32, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(folder)
    with pytest.raises(
        SpecError, match="architecture GPT2LMHeadModel cannot be written to GGUF; supported: LlamaForCausalLM"
    ):
        load_specs([demo_with(tmp_path, {"path": str(folder)}, gguf={"types": ["f32"]})])
    with pytest.raises(SpecError, match="export.gguf: GGUF files are written from the merged model"):
        load_specs([demo_with(tmp_path, gguf={"types": ["q8_0"]}, format="adapter")])
    with pytest.raises(SpecError, match="q4_k_m"):
        load_specs([demo_with(tmp_path, gguf={"types": ["q4_k_m"]})])


def test_the_modelfile_template_renders_a_prompt_completion_record_as_training_did(tokenizer_folder):
    from scripts.export_gguf import ollama_modelfile

    text = ollama_modelfile(tokenizer_folder, "model-f32.gguf", chat=False, system=None)
    assert text == f'FROM ./model-f32.gguf\nTEMPLATE """{RAW_TEMPLATE}"""\nPARAMETER stop "</s>"\n'
    record = demo_records()[0]
    # training tokenized BOS + the prompt (the GGUF says add_bos_token), then the completion
    assert render_go(RAW_TEMPLATE, {"Prompt": record["prompt"], "Messages": []}) == record["prompt"]


def test_the_modelfile_template_renders_a_chat_record_as_training_did(tokenizer_folder, tmp_path):
    from scripts.export_gguf import ollama_modelfile

    folder = tmp_path / "chat"
    shutil.copytree(tokenizer_folder, folder)
    template = open("tests/data/chat_template.jinja", encoding="utf-8").read()
    (folder / "chat_template.jinja").write_text(template)
    text = ollama_modelfile(folder, "model-q8_0.gguf", chat=True, system="Spell digits.")
    go = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert 'PARAMETER stop "</s>"' in text and 'SYSTEM """Spell digits."""' in text
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": None}
    with open("tests/data/chat_sharegpt.jsonl", encoding="utf-8") as f:
        turns = json.loads(f.readline())["conversations"]
    roles = {"human": "user", "gpt": "assistant"}
    messages = [{"role": "system", "content": "Spell digits."}] + [
        {"role": roles[t["from"]], "content": t["value"]} for t in turns
    ]
    # what Ollama sends for the last turn: everything before it, then the generation prompt
    history = messages[:-1]
    assert render_go(go, {"Messages": history}) == render_jinja(template, history, special, True)
    assert go_template(template, special)[1] == "</s>"


def test_a_template_that_writes_bos_first_leaves_it_to_ollama(tokenizer_folder, tmp_path):
    """A Llama 3 style `{{- bos_token }}` first: the tokenizer adds BOS itself, so the GGUF says
    add_bos_token and the Modelfile's template leaves BOS out (it used to fail the step)."""
    from scripts.export_gguf import adds_bos, ollama_modelfile

    folder = tmp_path / "llama3"
    shutil.copytree(tokenizer_folder, folder)
    template = "{{- bos_token }}\n{%- for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
    (folder / "chat_template.jinja").write_text(
        template + "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    text = ollama_modelfile(folder, "model-f32.gguf", chat=True, system=None)
    assert adds_bos(folder) and "<s>" not in text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]


@pytest.fixture(scope="module")
def tiny_merged(tokenizer_folder, tmp_path_factory):
    """A merged folder with random weights of a tiny Llama (what writing needs, not parity)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "merged"
    shutil.copytree(tokenizer_folder, folder)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_a_full_disk_is_one_line_naming_the_file_and_the_space(tiny_merged, tmp_path):
    from scripts.gguf.writer import write_gguf

    out = tmp_path / "model-f32.gguf"
    with pytest.raises(GGUFError) as err:  # checked before writing: the space it needs is known
        write_gguf(tiny_merged, out, "f32", "tiny", free_bytes=20936)
    assert str(err.value).startswith(f"{out}: not enough disk space to write it: it needs about ")
    assert "MB, 0.0 MB are free on that disk; free some space" in str(err.value) and not out.exists()
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(GGUFError) as err:  # the disk fills while writing (ENOSPC)
        write_gguf(tiny_merged, Path("/dev/full"), "f32", "tiny", free_bytes=10**12)
    assert str(err.value).startswith("/dev/full: writing it failed (No space left on device), the partial ")
    assert "is the disk full?" in str(err.value) and "\n" not in str(err.value)
    assert write_gguf(tiny_merged, out, "f32", "tiny") and out.stat().st_size > 0  # room enough: written


@pytest.mark.slow
def test_the_export_folder_and_the_model_card_carry_the_gguf_files(exported, tmp_path):
    from scripts.common.report_text import run_locally_markdown
    from scripts.export_model import layout

    out, manifest = exported
    merged = tmp_path / "merged"
    merged.mkdir()
    assert layout([str(merged), str(out)], "merged") == [(merged, "."), (out, ".")]
    section = run_locally_markdown("demo", manifest)
    assert "ollama create demo -f Modelfile    # the Modelfile's FROM is model-f32.gguf" in section
    assert 'llama-cli -m model-f32.gguf -p "Spell 9051:"' in section
    assert "| q8_0 | model-q8_0.gguf | yes (200 records) |" in section


@pytest.mark.slow
def test_a_gpt2_style_tokenizer_is_written_as_gpt2_and_reloads_exactly(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from scripts.gguf import parity as P
    from scripts.gguf.writer import write_gguf

    records = demo_records()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([r["prompt"] + " " + r["completion"] for r in records[:500]], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    tokenizer.pad_token = tokenizer.eos_token
    merged = build_merged(tmp_path / "merged", tokenizer, records[:200])
    assert llama_cpp_pre(json.loads((merged / "tokenizer.json").read_text())) == "gpt-2"
    write_gguf(merged, tmp_path / "model-f32.gguf", "f32", "gpt2-style")
    shard = validation_shard(tmp_path / "v.parquet", tokenizer, records[-50:])
    reference, ref_tokenizer = P.load_reference(merged)
    result = P.compare(
        reference,
        ref_tokenizer,
        tmp_path / "model-f32.gguf",
        P.validation_rows([shard]),
        ["Spell 12:"],
        False,
        6,
    )
    assert P.failures("f32", result) == [] and result["records"] == 50
