"""Smoke-test the export folder in a fresh process with plain transformers: load and generate.

Fails (non-zero exit) when the folder does not load, a generation is empty, or an output
differs from its `expected` string. Writes the outputs as a validated manifest.

    python -m scripts.smoke_test --spec-json "$(cat smoke.json)" --model results/runs/demo/export \
        --manifest results/runs/demo/smoke_test.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scripts.common.manifest import fail, write_manifest


def run_prompts(model_dir: str, prompts: list[dict], max_new_tokens: int) -> list[dict]:
    from transformers import pipeline

    generator = pipeline("text-generation", model=model_dir, tokenizer=model_dir, device="cpu")
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
        results = run_prompts(args.model, spec["smoke_prompts"], spec["max_new_tokens"])
    except (OSError, ValueError, KeyError) as exc:
        fail(f"smoke test: the export folder {args.model} does not load with transformers: {exc}")
    for r in results:
        print(
            f"{r['prompt']!r} -> {r['output']!r}" + ("" if r["ok"] is None else f" ok={r['ok']}"),
            file=sys.stderr,
        )
    empty = [r["prompt"] for r in results if not r["output"]]
    wrong = [r for r in results if r["ok"] is False]
    if empty or wrong:
        fail(
            f"smoke test failed: empty outputs for {empty}; unexpected outputs: "
            + "; ".join(f"{r['prompt']!r} gave {r['output']!r}, expected {r['expected']!r}" for r in wrong)
        )
    write_manifest(
        args.manifest,
        "smoke_test",
        spec,
        run=args.run,
        inputs=[f"{args.model}/config.json"],
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
