"""Export of a tiny trained model in every format, each reloaded in a fresh process: merged
logits match the adapter model, the tokenizer keeps the training chat template and special
tokens, the generation config holds the evaluated decoding (the smoke test generates with it, as
`pipeline()` does by default, for merged and adapter folders), the smoke test fails on a broken
export, and a QLoRA adapter merges to fp32."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import export_adapter, merge_model, smoke_test, train_model
from scripts.common.files import jsonl_text, read_jsonl
from tests.workflow_fixtures import REPO

pytestmark = pytest.mark.slow
TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
BUILD = {"build": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "vocab_size": 512}}
PROMPT = "Spell 8073:"
DECODING = {"max_new_tokens": 6, "do_sample": False}  # the evaluate settings the export carries
# a fresh process: load the folder with plain transformers, print logits and a greedy generation
RELOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
out = {}
for folder in sys.argv[2:]:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tok(sys.argv[1], return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0]
        gen = model.generate(**ids, max_new_tokens=6, do_sample=False)
    out[folder] = {
        "logits": logits.tolist(),
        "input_ids": ids["input_ids"][0].tolist(),
        "weights_dtype": str(next(model.parameters()).dtype),
        "text": tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True),
        "new_tokens": int(gen.shape[1] - ids["input_ids"].shape[1]),
        "chat_template": tok.chat_template,
        "special": {k: str(v) for k, v in tok.special_tokens_map.items()},
        "ids": [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id],
    }
print(json.dumps(out))
"""


def reload_in_fresh_process(*folders: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, PROMPT, *map(str, folders)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(k): v for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}


def train_tiny(root: Path, base: Path, tokens: Path, method: str, steps: int) -> Path:
    out = root / method
    spec = {"method": method, "max_steps": steps, "learning_rate": 3e-3, "per_device_batch_size": 16}
    spec |= {"logging_steps": 4, "save_steps": 1000, "threads": 2}
    train_model.main(
        [
            *("--spec-json", json.dumps(spec), "--base", str(base), "--tokens", str(tokens)),
            *("--work-dir", str(root / f"work-{method}"), "--out", str(out / "model")),
            *("--log", str(out / "log.jsonl"), "--manifest", str(out / "manifest.json")),
        ]
    )
    return out / "model"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A built base whose tokenizer carries a chat template, its tokens, and a trained LoRA adapter."""
    from scripts import base_model, tokenize_shard
    from scripts.common.modeling import load_tokenizer
    from scripts.data.tokenizer_sample import tokenizer_text

    root = tmp_path_factory.mktemp("export")
    rows = read_jsonl(REPO / "data/demo/spell_digits.jsonl")[:1500]
    records = [{"id": f"{i:016x}", "split": "train", **r} for i, r in enumerate(rows)]
    (root / "clean.jsonl").write_text(jsonl_text(records))
    sample = [{"id": r["id"], "text": tokenizer_text(r)} for r in records]  # as shard_data writes it
    (root / "tokenizer_sample.jsonl").write_text(jsonl_text(sample))
    base = root / "base"
    base_model.main(
        ["--spec-json", json.dumps(BUILD), "--records", str(root / "tokenizer_sample.jsonl")]
        + ["--out", str(base), "--manifest", str(root / "base.json")]
    )
    tokenizer = load_tokenizer(base)
    tokenizer.chat_template = TEMPLATE  # as a chat dataset's training tokenizer would carry
    tokenizer.save_pretrained(base)
    tokens = root / "tokens.parquet"
    tokenize_shard.main(
        ["--spec-json", json.dumps({"max_length": 32}), "--input", str(root / "clean.jsonl")]
        + ["--tokenizer", str(base), "--out", str(tokens), "--manifest", str(root / "tok.json")]
    )
    return {"root": root, "base": base, "tokens": tokens, "lora": train_tiny(root, base, tokens, "lora", 150)}


def merge(tiny, name: str, method: str = "lora", tuned=None, **spec) -> Path:
    out = tiny["root"] / name
    spec.setdefault("generation", DECODING)
    merge_model.main(
        [
            *("--spec-json", json.dumps(spec), "--method", method, "--base", str(tiny["base"])),
            *("--tuned", str(tuned or tiny["lora"]), "--out", str(out)),
            *("--manifest", str(tiny["root"] / f"{name}.manifest.json")),
        ]
    )
    return out


def adapter_logits(tiny, adapter=None):
    """Logits of the base (fp32) with the adapter applied, unmerged, in this process."""
    import torch

    from scripts.common.modeling import load_tokenizer, load_tuned_model

    adapter = adapter or tiny["lora"]
    model = load_tuned_model(tiny["base"], adapter, "lora", "fp32").eval()
    ids = load_tokenizer(adapter)(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0]


@pytest.fixture(scope="module")
def exported(tiny):
    """Every format, reloaded together in one fresh process."""
    folders = {
        "fp32": merge(tiny, "fp32", dtype="fp32"),
        "fp16": merge(tiny, "fp16", dtype="fp16"),
        "bf16": merge(tiny, "bf16", dtype="bf16"),
        "sharded": merge(tiny, "sharded", dtype="fp32", max_shard_size="1MB"),
        "adapter": tiny["root"] / "adapter",
    }
    export_adapter.main(
        ["--spec-json", json.dumps({"generation": DECODING}), "--method", "lora"]
        + ["--base", str(tiny["base"]), "--tuned", str(tiny["lora"])]
        + ["--out", str(folders["adapter"]), "--manifest", str(tiny["root"] / "adapter.manifest.json")]
    )
    reloaded = reload_in_fresh_process(*folders.values(), tiny["lora"])
    return {name: (folder, reloaded[folder]) for name, folder in {**folders, "trained": tiny["lora"]}.items()}


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [("fp32", 1e-4), ("sharded", 1e-4), ("adapter", 1e-5), ("fp16", 2e-2), ("bf16", 2e-1)],
)
def test_each_format_reloads_and_matches_the_adapter_model(tiny, exported, name, tolerance):
    import torch

    folder, got = exported[name]
    reference = adapter_logits(tiny)
    diff = (torch.tensor(got["logits"]) - reference).abs().max().item()
    assert diff <= tolerance, f"{name}: max logit difference {diff}"
    assert got["new_tokens"] > 0
    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    if name == "adapter":
        assert weights == ["adapter_model.safetensors"] and not (folder / "training_args.bin").exists()
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(tiny["base"])
    else:
        dtype = json.loads((folder / "config.json").read_text())["dtype"]
        assert dtype == {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(name, "float32")
        assert "model.safetensors" in weights or len(weights) > 1


def test_merged_weights_are_sharded_above_the_size(exported):
    folder, _ = exported["sharded"]
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 2 and all(p.stat().st_size <= 1_000_000 for p in shards), shards
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert not (exported["fp32"][0] / "model.safetensors.index.json").exists()


def test_tokenizer_keeps_the_training_chat_template_and_special_tokens(tiny, exported):
    trained = exported["trained"][1]
    assert trained["chat_template"] == TEMPLATE
    for name in ("fp32", "adapter"):
        folder, got = exported[name]
        assert got["chat_template"] == trained["chat_template"], name
        assert got["special"] == trained["special"] and got["ids"] == trained["ids"], name
    bos, eos, pad = trained["ids"]
    assert pad != eos
    for name in ("fp32", "adapter"):  # the adapter folder gets its own: transformers reads the base's
        generation = json.loads((exported[name][0] / "generation_config.json").read_text())
        assert (generation["eos_token_id"], generation["pad_token_id"]) == (eos, pad), name
        assert (generation["do_sample"], generation["max_new_tokens"]) == (False, 6), name
    manifest = json.loads((tiny["root"] / "fp32.manifest.json").read_text())
    assert manifest["details"]["chat_template"] is True


@pytest.mark.parametrize("name", ["fp32", "adapter"])
def test_smoke_test_generates_with_the_folders_decoding(exported, tmp_path, name):
    """No decoding arguments: the folder's generation_config (greedy, 6 new tokens) gives the
    same text as greedy generate() with max_new_tokens=6 in a fresh process."""
    folder, got = exported[name]
    spec = {"smoke_prompts": [{"prompt": PROMPT, "expected": got["text"]}]}
    smoke_test.main(
        ["--spec-json", json.dumps(spec), "--model", str(folder), "--manifest", str(tmp_path / "ok.json")]
    )
    manifest = json.loads((tmp_path / "ok.json").read_text())
    assert manifest["counts"] == {"prompts": 1, "checked": 1, "passed": 1}
    assert manifest["details"]["decoding"]["do_sample"] is False
    assert manifest["details"]["decoding"]["max_new_tokens"] == 6


def test_smoke_test_passes_and_checks_expected_strings(exported, tmp_path, capsys):
    folder, got = exported["fp32"]
    spec = {"smoke_prompts": [{"prompt": PROMPT, "expected": got["text"]}]}
    smoke_test.main(
        ["--spec-json", json.dumps(spec), "--model", str(folder), "--manifest", str(tmp_path / "ok.json")]
    )
    manifest = json.loads((tmp_path / "ok.json").read_text())
    assert manifest["counts"] == {"prompts": 1, "checked": 1, "passed": 1}
    spec["smoke_prompts"][0]["expected"] = "not what it says"
    with pytest.raises(SystemExit) as exit_info:
        smoke_test.main(
            [
                "--spec-json",
                json.dumps(spec),
                "--model",
                str(folder),
                "--manifest",
                str(tmp_path / "bad.json"),
            ]
        )
    assert exit_info.value.code != 0 and not (tmp_path / "bad.json").exists()
    assert f"{PROMPT!r} gave {got['text'].strip()!r}, expected 'not what it says'" in capsys.readouterr().err


def test_smoke_test_fails_on_a_truncated_safetensors_file(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported["fp32"][0], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    spec = {"smoke_prompts": [{"prompt": PROMPT}]}
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.smoke_test", "--spec-json", json.dumps(spec)]
        + ["--model", str(broken), "--manifest", str(tmp_path / "smoke.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert f"the export folder {broken} does not load with transformers" in proc.stderr
    assert "SafetensorError" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "smoke.json").exists()


def test_a_qlora_trained_model_exports_to_a_merged_fp32_model_that_reloads_and_generates(tiny):
    import torch

    from scripts.common.modeling import load_base_model

    qlora = train_tiny(tiny["root"], tiny["base"], tiny["tokens"], "qlora", 30)
    assert json.loads((qlora / "adapter_config.json").read_text())["peft_type"] == "LORA"
    folder = merge(tiny, "qlora-merged", method="qlora", tuned=qlora, dtype="fp32")
    manifest = json.loads((tiny["root"] / "qlora-merged.manifest.json").read_text())
    assert manifest["details"]["merged_from"] == "qlora"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    got = reload_in_fresh_process(folder)[folder]
    assert got["weights_dtype"] == "torch.float32" and got["new_tokens"] > 0
    # merged onto the fp32 base: the same function as base + adapter, and not the base itself
    merged = torch.tensor(got["logits"])
    assert (merged - adapter_logits(tiny, qlora)).abs().max().item() <= 1e-4
    base = load_base_model(tiny["base"], "fp32").eval()
    ids = torch.tensor([got["input_ids"]])
    with torch.no_grad():
        assert (merged - base(input_ids=ids).logits[0]).abs().max().item() > 1e-2
