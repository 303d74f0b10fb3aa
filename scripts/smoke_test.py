"""Smoke-test the export folder in a fresh process with plain transformers: load and generate.

Generates as a user does: `pipeline("text-generation", model=folder)(prompt)` with no decoding
arguments, so the folder's own generation_config (the decoding evaluation used) decides, and
`expected` strings check that the export answers as the report says. Fails (non-zero exit)
when the folder does not load, a generation is empty, or an output differs from its `expected`
string. Writes the outputs and the decoding used as a validated manifest.

    python -m scripts.smoke_test --spec-json "$(cat smoke.json)" --model results/runs/demo/export \
        --manifest results/runs/demo/smoke_test.manifest.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.manifest import write_manifest

CONFIG_FILES = ("config.json", "adapter_config.json", "generation_config.json", "README.md")
DECODING_KEYS = (
    "do_sample",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "eos_token_id",
    "pad_token_id",
)


def load_generator(model_dir: str):
    """`pipeline("text-generation", model=folder)`, as a user writes it. For a PEFT adapter
    folder, transformers takes the tokenizer and generation config from the base the adapter
    names: those of the folder itself (the training tokenizer, the evaluated decoding) are set."""
    from transformers import GenerationConfig, pipeline

    if (Path(model_dir) / "config.json").is_file() or not (Path(model_dir) / "adapter_config.json").is_file():
        return pipeline("text-generation", model=model_dir, device="cpu")
    generator = pipeline("text-generation", model=model_dir, tokenizer=model_dir, device="cpu")
    generator.model.generation_config = GenerationConfig.from_pretrained(model_dir)
    return generator


def decoding_of(generator) -> dict:
    """The decoding settings the folder's generation_config gives (what pipeline() uses)."""
    config = generator.model.generation_config.to_diff_dict()
    return {k: v for k, v in config.items() if k in DECODING_KEYS}


def continuation(prompt: str, generated_text: str) -> str:
    """The generated part: the pipeline returns the prompt and its continuation by default."""
    return (generated_text[len(prompt) :] if generated_text.startswith(prompt) else generated_text).strip()


def run_prompts(generator, prompts: list[dict]) -> list[dict]:
    results = []
    for item in prompts:
        out = continuation(item["prompt"], generator(item["prompt"])[0]["generated_text"])
        expected = item.get("expected")
        results.append(
            {
                "prompt": item["prompt"],
                "output": out,
                "expected": expected,
                "ok": None if expected is None else out == expected.strip(),
            }
        )
    return results


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def verdict(results: list[dict]) -> str | None:
    """The failure message for empty or unexpected generations, or None when all passed."""
    empty = [r["prompt"] for r in results if not r["output"]]
    wrong = [r for r in results if r["ok"] is False]
    problems = []
    if empty:
        problems.append(f"nothing generated for {empty}")
    problems += [f"{r['prompt']!r} gave {r['output']!r}, expected {r['expected']!r}" for r in wrong]
    return "smoke test failed: " + "; ".join(problems) if problems else None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help='{"smoke_prompts": [...]}')
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--run")
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    spec = json_arg(args.spec_json)
    try:
        generator = load_generator(args.model)
    except Exception as exc:  # any load failure (corrupt safetensors, missing files) ends the step
        fail(
            f"smoke test: the export folder {args.model} does not load with transformers "
            f"({first_line(exc)}); the export is broken or incomplete: rebuild it with "
            "`snakemake export --cores 2 --forcerun merge_model` (export_adapter for an adapter export)"
        )
    try:
        results = run_prompts(generator, spec["smoke_prompts"])
    except Exception as exc:
        fail(f"smoke test: {args.model} loaded but generation failed ({first_line(exc)})")
    for r in results:
        print(
            f"{r['prompt']!r} -> {r['output']!r}" + ("" if r["ok"] is None else f" ok={r['ok']}"),
            file=sys.stderr,
        )
    problem = verdict(results)
    if problem:
        fail(problem)
    write_manifest(
        args.manifest,
        "smoke_test",
        spec,
        run=args.run,
        inputs=[p for p in map(Path(args.model).joinpath, CONFIG_FILES) if p.is_file()],
        counts={
            "prompts": len(results),
            "checked": sum(r["ok"] is not None for r in results),
            "passed": sum(r["ok"] is True for r in results),
        },
        details={"outputs": results, "decoding": decoding_of(generator)},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )


if __name__ == "__main__":
    main()
