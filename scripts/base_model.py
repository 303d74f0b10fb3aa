"""Prepare the base model folder: build a tiny Llama + BPE tokenizer, or check a hub/local model.

Build: trains a byte-level BPE tokenizer (digits split, explicit <pad>/<s>/</s>, pad != eos)
on shard_data's bounded sample of the training split, then initialises a Llama from the config.
Hub id / local path: loads the tokenizer, sets a missing pad token (recorded), checks it
against the model config, and records where the weights are.

    python -m scripts.base_model --spec-json "$(cat model.json)" --records clean/*.jsonl \
        --out results/models/KEY/model --manifest results/models/KEY/manifest.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_json, read_jsonl
from scripts.common.manifest import write_manifest
from scripts.common.modeling import BASE_REF
from scripts.compiler.spec import SpecError, check_slice

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}


def training_texts(sample_files) -> list[str]:
    """Texts of the tokenizer sample (shard_data writes it in id order: training is order-sensitive)."""
    return [r["text"] for f in sample_files for r in read_jsonl(f)]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(SPECIAL["bos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos']} $A",
        pair=f"{SPECIAL['bos']} $A $B",
        special_tokens=[(SPECIAL["bos"], bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        model_max_length=1 << 20,
    )


def build_model_from_config(build: dict, tokenizer, out: Path) -> int:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=build["hidden_size"],
        intermediate_size=build["intermediate_size"],
        num_hidden_layers=build["num_layers"],
        num_attention_heads=build["num_heads"],
        num_key_value_heads=build["num_heads"],
        max_position_embeddings=build["max_position_embeddings"],
        tie_word_embeddings=build["tie_word_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(build["seed"])
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(out), safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def fix_pad_token(tokenizer) -> bool:
    """Set a missing pad token to unk, else eos (safe: labels are explicit and keep EOS)."""
    if tokenizer.pad_token is not None:
        return False
    tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return True


def check_safetensors(path: str) -> None:
    """A local model folder must hold safetensors weights: pickled ones (.bin, .pt) can run code
    when loaded, so tunemake never loads them (hub ids are loaded with use_safetensors too)."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return  # a missing folder gets transformers' own message below
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    found = f"it has {', '.join(pickled)}" if pickled else "it has no weights"
    raise SpecError(
        f"model.path: {path!r} has no .safetensors weights ({found}); tunemake loads weights from "
        "safetensors only, since pickled weights can run code: convert the folder once with "
        "save_pretrained(..., safe_serialization=True) in an environment you trust"
    )


def check_embedding_rows(path: str, vocab_size: int) -> None:
    """The input embedding in the safetensors files has config.vocab_size rows (read from the
    files' headers only), so a model whose config and weights disagree fails here, not in training."""
    from safetensors import safe_open

    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                if name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
                    rows = weights.get_slice(name).get_shape()[0]
                    if rows != vocab_size:
                        raise SpecError(
                            f"model.path: {file} holds {name} with {rows} rows but config.json says "
                            f"vocab_size {vocab_size}: the config and the weights do not belong together; "
                            "fix vocab_size in config.json or save the model again with save_pretrained"
                        )
                    return


def prepare_pretrained(model: dict, out: Path) -> tuple[object, int, bool]:
    """Tokenizer checked against the config of a hub id or local folder; weights stay put."""
    from transformers import AutoConfig, AutoTokenizer

    source = model.get("id") or model["path"]
    if "path" in model:
        check_safetensors(model["path"])
    kwargs = {"revision": model.get("revision"), "trust_remote_code": model["trust_remote_code"]}
    if model["trust_remote_code"]:
        print("warning: trust_remote_code is on: code shipped with the model will run", file=sys.stderr)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: a malformed config.json or tokenizer file
        hint = (
            f"{source} must hold a valid config.json and tokenizer files (save_pretrained writes them)"
            if "path" in model
            else "check the id and the network (HF_HUB_OFFLINE=1 allows only cached models)"
        )
        raise SpecError(f"model: cannot load {source!r}: {str(exc).splitlines()[0]}; {hint}") from None
    if tokenizer.eos_token is None:
        raise SpecError(
            f"model: the tokenizer of {source!r} has no eos token, so a tuned model could never stop "
            "and padding has no fallback; add one and save it: "
            "tokenizer.add_special_tokens({'eos_token': '</s>'}); tokenizer.save_pretrained(folder)"
        )
    if "path" in model:
        check_embedding_rows(model["path"], config.vocab_size)
    added = fix_pad_token(tokenizer)
    if len(tokenizer) > config.vocab_size:
        raise SpecError(
            f"model: the tokenizer of {source!r} has {len(tokenizer)} tokens but the model's "
            f"embeddings have {config.vocab_size} rows: they do not belong together"
        )
    tokenizer.save_pretrained(str(out))
    return tokenizer, 0, added


def from_run_model(parent_base: str, tuned: str, method: str, out: Path) -> tuple[object, int]:
    """Another run's tuned model as a plain model in `out`: full weights as trained, or the
    LoRA/QLoRA adapter merged onto its base in fp32; with the tokenizer (and chat template) it
    was trained with."""
    from scripts.common.modeling import load_tokenizer, load_tuned_model

    model = load_tuned_model(parent_base, tuned, "full" if method == "full" else "lora", "fp32")
    if method != "full":
        model = model.merge_and_unload()
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer = load_tokenizer(tuned)
    tokenizer.save_pretrained(str(out))
    return tokenizer, sum(p.numel() for p in model.parameters())


def parent_manifests(args) -> list[str]:
    """model.from_run's inputs as the manifests of the two folders it read (they hold the
    sha256 of every file), so that a manifest pins the exact run it started from."""
    from scripts.compiler.steps import manifest_of

    found = [manifest_of(args.tuned), manifest_of(args.parent_base)]
    return [str(path) for path in found if path is not None]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the model section as JSON")
    parser.add_argument("--records", nargs="*", default=[], help="the tokenizer sample (build only)")
    parser.add_argument("--tuned", help="model.from_run: the run's trained model or adapter")
    parser.add_argument("--parent-base", help="model.from_run: the base that run trained from")
    parser.add_argument("--parent-method", choices=["full", "lora", "qlora"])
    parser.add_argument("--parent-run", help="model.from_run: the run's name (recorded)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    try:
        model = check_slice("model", json_arg(args.spec_json))
        out.mkdir(parents=True, exist_ok=True)
        if "build" in model:
            tokenizer = train_tokenizer(training_texts(args.records), model["build"]["vocab_size"])
            tokenizer.save_pretrained(str(out))
            parameters, added, source, weights = (
                build_model_from_config(model["build"], tokenizer, out),
                False,
                "build",
                ".",
            )
        elif "from_run" in model:
            if not (args.tuned and args.parent_base and args.parent_method and args.parent_run):
                fail("model.from_run needs --tuned, --parent-base, --parent-method and --parent-run")
            tokenizer, parameters = from_run_model(args.parent_base, args.tuned, args.parent_method, out)
            added, source, weights = False, "from_run", "."
        else:
            tokenizer, parameters, added = prepare_pretrained(model, out)
            source, weights = ("id", model["id"]) if "id" in model else ("path", model["path"])
    except SpecError as exc:
        fail(str(exc))
    ref = {
        "weights": weights,
        "revision": model.get("revision"),
        "trust_remote_code": model["trust_remote_code"],
    }
    atomic_write_json(out / BASE_REF, ref)
    write_manifest(
        args.manifest,
        "base_model",
        model,
        inputs=[*args.records, *(parent_manifests(args) if "from_run" in model else [])],
        outputs=[out],
        counts={"parameters": parameters, "vocab_size": len(tokenizer)},
        details={
            "source": source,
            "weights": weights,
            **(
                {"parent_run": {"run": args.parent_run, "method": args.parent_method}}
                if "from_run" in model
                else {}
            ),
            "pad_token": tokenizer.pad_token,
            "pad_token_added": added,
            "special_tokens": {
                "bos": tokenizer.bos_token,
                "eos": tokenizer.eos_token,
                "pad": tokenizer.pad_token,
            },
        },
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"base model ready: {source} {weights}, {parameters} parameters", file=sys.stderr)


if __name__ == "__main__":
    main()
