"""Smoke-test the export folder in a fresh process with plain transformers: load and generate.

Fails (non-zero exit) when the folder does not load, a generation is empty, or an output
differs from its `expected` string. Writes the outputs as a validated manifest.

    python -m scripts.smoke_test --spec-json "$(cat smoke.json)" --model results/runs/demo/export \
        --manifest results/runs/demo/smoke_test.manifest.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scripts.common.cli import fail
from scripts.common.manifest import write_manifest

CONFIG_FILES = ("config.json", "adapter_config.json", "README.md")


def load_generator(model_dir: str):
    """A plain transformers text-generation pipeline on the folder (an adapter folder works too)."""
    from transformers import pipeline

    return pipeline("text-generation", model=model_dir, tokenizer=model_dir, device="cpu")


def run_prompts(generator, prompts: list[dict], max_new_tokens: int) -> list[dict]:
    results = []
    for item in prompts:
        out = generator(
            item["prompt"], max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False
        )[0]["generated_text"].strip()
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
    parser.add_argument("--spec-json", required=True, help='{"smoke_prompts": [...], "max_new_tokens": N}')
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--run")
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    spec = json.loads(args.spec_json)
    try:
        generator = load_generator(args.model)
    except Exception as exc:  # any load failure (corrupt safetensors, missing files) ends the step
        fail(
            f"smoke test: the export folder {args.model} does not load with transformers "
            f"({first_line(exc)}); the export is broken or incomplete: rebuild it with "
            "`snakemake export --forcerun merge_model` (export_adapter for an adapter export)"
        )
    try:
        results = run_prompts(generator, spec["smoke_prompts"], spec["max_new_tokens"])
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
        details={"outputs": results},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )


if __name__ == "__main__":
    main()
