"""Write the merged model as GGUF (one file per export.gguf type) with an Ollama Modelfile, and
prove each file behaves like the merged safetensors model (scripts/gguf/parity.py).

Reads the merged folder and the run's validation token shards; writes <out>/model-<type>.gguf,
<out>/Modelfile and a manifest with the parity figures. Fails, writing nothing Snakemake keeps,
when a file tokenizes a validation prompt differently, or (f32) its logits or greedy
generations differ from the safetensors model's.

    python -m scripts.export_gguf --spec-json '{"gguf": {"types": ["f32", "q8_0"]},
            "smoke_prompts": [{"prompt": "Spell 66:"}], "chat": false, "system": null,
            "max_new_tokens": 16}' --merged results/runs/demo/merged \
        --tokens '["results/tokens/KEY/SHARD.parquet"]' --out results/runs/demo/gguf \
        --manifest results/runs/demo/gguf.manifest.json --run demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.manifest import write_manifest
from scripts.compiler.gguf_rules import GGUFError
from scripts.compiler.spec import SpecError, check_slice
from scripts.compiler.steps import manifest_of
from scripts.gguf.modelfile import RAW_TEMPLATE, go_template, modelfile
from scripts.gguf.writer import write_gguf


def gguf_spec(given: dict) -> dict:
    """The step's slice (steps.step_slices), validated, defaults filled."""
    export = check_slice("export", {"smoke_prompts": given["smoke_prompts"], "gguf": given["gguf"]})
    return {**given, "gguf": export["gguf"]}


def special_tokens(folder: Path) -> dict:
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        out[key] = value.get("content") if isinstance(value, dict) else value
    return out


def adds_bos(folder: Path) -> bool:
    """Whether the tokenizer puts BOS first by itself (the GGUF's add_bos_token, as the writer
    finds it): then llama.cpp and Ollama add it, and the Modelfile's template leaves it out."""
    from scripts.common.chat import load_tokenizer_files

    tokenizer = load_tokenizer_files(folder)
    bos = tokenizer.ids["bos_token"]
    return bos is not None and tokenizer.encode(["a"], True)[0][:1] == [bos]


def ollama_modelfile(folder: Path, first_gguf: str, chat: bool, system: str | None) -> str:
    """The Modelfile: the chat template as a Go template for chat runs, the raw prompt else."""
    from scripts.gguf.writer import _chat_template

    special = special_tokens(folder)
    stops = [special["eos_token"]] if special["eos_token"] else []
    template = RAW_TEMPLATE
    if chat:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        jinja = _chat_template(folder, config)
        if jinja is None:
            raise GGUFError("export.gguf: a chat run's merged tokenizer has no chat template")
        template, end_of_turn = go_template(jinja, special, adds_bos(folder))
        if end_of_turn and end_of_turn not in stops:
            stops.append(end_of_turn)
    return modelfile(first_gguf, template, stops, system if chat else None)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the export_gguf slice as JSON (or @file)")
    parser.add_argument("--merged", required=True, help="the merged safetensors folder")
    parser.add_argument("--tokens", required=True, help="the run's token shards, a JSON list (or @file)")
    parser.add_argument("--out", required=True, help="folder for the .gguf files and the Modelfile")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the parity check")
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def write_all(spec: dict, merged: Path, out: Path, run: str) -> dict:
    """Write every type and the Modelfile; returns {type: {ggml type: tensors}}."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {t: write_gguf(merged, out / f"model-{t}.gguf", t, run) for t in spec["gguf"]["types"]}
    first = f"model-{spec['gguf']['types'][0]}.gguf"
    text = ollama_modelfile(merged, first, spec["chat"], spec.get("system"))
    try:
        (out / "Modelfile").write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GGUFError(
            f"{out / 'Modelfile'}: writing it failed ({exc.strerror or exc}); is the disk full?"
        ) from None
    return tensors


def check_all(spec: dict, merged: Path, out: Path, token_files: list[str], threads: int = 2) -> dict:
    import torch

    from scripts.gguf import parity as P

    torch.set_num_threads(threads)
    reference, ref_tokenizer = P.load_reference(merged)
    rows = P.validation_rows(token_files)
    prompts = [p["prompt"] for p in spec["smoke_prompts"]]
    results = {}
    for spec_type in spec["gguf"]["types"]:
        path = out / f"model-{spec_type}.gguf"
        try:
            results[spec_type] = P.compare(
                reference, ref_tokenizer, path, rows, prompts, spec["chat"], spec["max_new_tokens"]
            )
        except Exception as exc:  # a truncated or corrupted file: say which, and how it failed
            first_line = (str(exc).splitlines() or [""])[0][:300]
            raise GGUFError(f"{path} does not load: {type(exc).__name__}: {first_line}") from None
    return results


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    out = Path(args.out)
    try:
        spec = gguf_spec(json_arg(args.spec_json))
        tensors = write_all(spec, Path(args.merged), out, args.run)
        written = time.time()
        from scripts.gguf.parity import failures

        token_files = json_arg(args.tokens)
        parity = check_all(spec, Path(args.merged), out, token_files, args.threads)
        problems = [p for t, r in parity.items() for p in failures(t, r)]
        if problems:
            raise GGUFError("GGUF parity failed: " + "; ".join(problems))
    except (SpecError, GGUFError) as exc:
        shutil.rmtree(out, ignore_errors=True)
        fail(str(exc))
    files = sorted(p for p in out.iterdir() if p.is_file())
    write_manifest(
        args.manifest,
        "export_gguf",
        json_arg(args.spec_json),
        run=args.run,
        inputs=[m for m in [manifest_of(args.merged)] if m] + list(token_files),
        outputs=files,
        counts={"files": len(files), "types": len(parity), "records": next(iter(parity.values()))["records"]},
        details={"folder": str(out), "tensor_types": tensors, "parity": parity},
        timings={"write_s": written - started, "parity_s": time.time() - written},
        environment=args.environment,
    )
    for spec_type, result in parity.items():
        print(
            f"{spec_type}: tokens equal {result['tokens_equal']}, max logit diff "
            f"{result['max_logit_diff']:.3g}, next-token agreement {result['next_token_agreement']:.4f} "
            f"(all positions {result['all_positions_agreement']:.4f})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
