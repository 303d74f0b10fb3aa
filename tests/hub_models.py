"""Local stand-ins for the hub models of examples/: a Hugging Face cache laid out as
huggingface_hub lays it out (models--Org--Name/{blobs,refs/main,snapshots/<sha>/...}), so that
`model.id: TinyLlama/TinyLlama-1.1B-Chat-v1.0` resolves with HF_HUB_CACHE pointing here and
HF_HUB_OFFLINE=1, without the network.

Each model keeps its real config's fields (architecture, model_type, rope_theta, token ids,
tied embeddings, grouped-query heads, ...) with the sizes shrunk, random weights, and a small
byte-level BPE tokenizer trained here with the real model's special tokens and chat template:
TinyLlama's has no pad token (like the real one) and a Zephyr-style template; Qwen2.5's pads
with <|endoftext|>, ends turns with <|im_end|> and renders ChatML with Qwen's default system
prompt; SmolLM2-135M (the base model) has <|endoftext|> for bos, eos and unk and no pad token.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# (the real chat templates, whitespace as in their tokenizer_config.json)
TINYLLAMA_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) '
    'or (message.role == "assistant") %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

LLAMA_FIELDS = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "mlp_bias": False,
    "model_type": "llama",
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}

MODELS = {
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": {
        # real: hidden 2048, intermediate 5632, 22 layers, 32 heads / 4 kv heads, vocab 32000
        "config": {
            **LLAMA_FIELDS,
            "hidden_size": 64,
            "intermediate_size": 176,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
        },
        "special": ["<unk>", "<s>", "</s>"],
        "tokens": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},  # no pad
        "config_ids": {"bos_token_id": "<s>", "eos_token_id": "</s>"},
        "add_bos": "<s>",
        "tokenizer_class": "LlamaTokenizer",
        "chat_template": TINYLLAMA_TEMPLATE,
    },
    "Qwen/Qwen2.5-0.5B-Instruct": {
        # real: hidden 896, intermediate 4864, 24 layers, 14 heads / 2 kv heads, vocab 151936
        "config": {
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "hidden_size": 56,
            "initializer_range": 0.02,
            "intermediate_size": 304,
            "max_position_embeddings": 32768,
            "max_window_layers": 21,
            "model_type": "qwen2",
            "num_attention_heads": 7,
            "num_hidden_layers": 2,
            "num_key_value_heads": 1,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "use_sliding_window": False,
        },
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},  # no bos, like Qwen's
        "config_ids": {"bos_token_id": "<|endoftext|>", "eos_token_id": "<|im_end|>"},
        "add_bos": None,
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": QWEN_TEMPLATE,
    },
    "HuggingFaceTB/SmolLM2-135M": {
        # real: hidden 576, intermediate 1536, 30 layers, 9 heads / 3 kv heads, vocab 49152
        "config": {
            **LLAMA_FIELDS,
            "initializer_range": 0.041666666666666664,
            "hidden_size": 48,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 3,
            "num_key_value_heads": 1,
            "max_position_embeddings": 8192,
            "rope_theta": 100000,
            "tie_word_embeddings": True,
        },
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
        "config_ids": {"bos_token_id": "<|endoftext|>", "eos_token_id": "<|endoftext|>"},
        "add_bos": None,
        "tokenizer_class": "GPT2Tokenizer",
        "chat_template": None,
    },
}

VOCAB_SIZE = 640


def corpus_texts(data_dir: Path) -> list[str]:
    """Every string in the example data files: what the tokenizers are trained on."""
    texts = []

    def walk(value):
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in sorted(data_dir.iterdir()):
        if path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                walk(json.loads(line))
        elif path.suffix == ".json":
            walk(json.loads(path.read_text()))
    return texts


def tokenizer_files(spec: dict, texts: list[str], folder: Path) -> tuple[int, dict]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns the vocab size
    and the config's token ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if spec["tokenizer_class"] == "LlamaTokenizer":  # sentencepiece-style, as Llama 2's tokenizer.json
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        alphabet = sorted({ch for text in texts for ch in text.replace(" ", "▁")} | {"▁"})
        special = spec["special"] + [f"<0x{byte:02X}>" for byte in range(256)]
    else:  # byte-level BPE, as GPT-2's, Qwen's and SmolLM's
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet, special = pre_tokenizers.ByteLevel.alphabet(), spec["special"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE + (256 if len(special) > len(spec["special"]) else 0),
        special_tokens=special,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if spec["add_bos"]:
        bos = spec["add_bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": spec["tokenizer_class"],
        "model_max_length": spec["config"]["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        **spec["tokens"],
    }
    if spec["tokenizer_class"] == "LlamaTokenizer":
        config.update(add_bos_token=True, add_eos_token=False, legacy=False, padding_side="right")
    if spec["chat_template"]:
        config["chat_template"] = spec["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(spec["tokens"], indent=2))
    return tok.get_vocab_size(), {name: tok.token_to_id(text) for name, text in spec["config_ids"].items()}


def model_files(spec: dict, vocab_size: int, ids: dict, folder: Path) -> None:
    """model.safetensors (random, seeded), config.json (the real fields, shrunk sizes) and
    generation_config.json."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {**spec["config"], **ids, "vocab_size": vocab_size}
    config = AutoConfig.for_model(**fields)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True))
    (folder / "generation_config.json").write_text(
        json.dumps({k: v for k, v in ids.items() if k in ("bos_token_id", "eos_token_id")}, indent=2)
    )


def add_to_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Move `folder`'s files into the cache as huggingface_hub stores a download: blobs named by
    their sha256, a snapshot of relative links named by a commit sha, refs/main holding it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs/main").write_text(commit)
    return snapshot


def build_hub_cache(cache: Path, data_dir: Path) -> dict[str, Path]:
    """The example models in a fresh cache at `cache`; returns their snapshot folders."""
    texts = corpus_texts(data_dir)
    snapshots = {}
    for repo_id, spec in MODELS.items():
        staging = cache.parent / ("staging-" + repo_id.replace("/", "--"))
        staging.mkdir(parents=True)
        vocab_size, ids = tokenizer_files(spec, texts, staging)
        model_files(spec, vocab_size, ids, staging)
        snapshots[repo_id] = add_to_cache(cache, repo_id, staging)
    return snapshots
