"""Evaluation's generation on the demo: batched (left padding, the spec's batch size) against
one prompt at a time, same tuned model, same validation prompts, same process.

Prints `batched_vs_one_at_a_time: R` (target >= 20): how many times faster the batched
generation of `scripts.evaluate` is. Trains the demo in a temporary copy of the workflow
first (about a minute), unless --workdir names a folder where `snakemake train` already ran.

    python bench/eval_generation.py [--workdir .] [--spec specs/demo.yaml] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workflow_fixtures import copy_workflow, snakemake  # noqa: E402


def timed_generation(model, tokenizer, prompts, decoding, repeats: int) -> tuple[float, list[list[int]]]:
    """Median seconds of `repeats` runs, and the generated ids."""
    from scripts.evaluation.generation import generate_ids

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate_ids(model, tokenizer, prompts, decoding)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(workdir: Path, spec_file: str, repeats: int, batch_size: int | None = None) -> dict:
    from scripts.common.modeling import load_tokenizer, load_tuned_model, pin_threads
    from scripts.common.token_splits import load_split
    from scripts.compiler.spec import load_specs
    from scripts.evaluation.generation import Decoding

    run = load_specs([workdir / spec_file])[0]
    keys, ev = run.keys, run.sections["evaluate"]
    base = workdir / f"results/models/{keys['model']}/model"
    tokens = sorted((workdir / f"results/tokens/{keys['tokens']}").glob("*.parquet"))
    pin_threads(run.sections["train"]["threads"], 0)
    rows = [r for r in load_split(tokens, "validation").to_pylist() if r["prompt_length"] > 0][
        : ev["max_examples"]
    ]
    prompts = [r["input_ids"][: r["prompt_length"]] for r in rows]
    tokenizer = load_tokenizer(base, padding_side="left")
    model = load_tuned_model(
        base, workdir / f"results/runs/{run.name}/train/model", run.sections["train"]["method"]
    )
    batched = Decoding.from_spec(ev)
    batched = replace(batched, batch_size=batch_size) if batch_size else batched
    timed_generation(model, tokenizer, prompts[:4], batched, 1)  # warm-up, not timed
    t_batched, out_batched = timed_generation(model, tokenizer, prompts, batched, repeats)
    t_single, out_single = timed_generation(
        model, tokenizer, prompts, replace(batched, batch_size=1), repeats
    )
    new_tokens = sum(map(len, out_batched))
    same = sum(a == b for a, b in zip(out_batched, out_single)) / len(prompts)
    return {
        "prompts": len(prompts),
        "batch_size": batched.batch_size,
        "batched_s": t_batched,
        "one_at_a_time_s": t_single,
        "batched_tokens_per_s": new_tokens / t_batched,
        "one_at_a_time_tokens_per_s": sum(map(len, out_single)) / t_single,
        "same_outputs": same,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="a workflow folder where `snakemake train` already ran")
    parser.add_argument("--spec", default="specs/demo.yaml", help="the spec, relative to the workflow")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many timings each")
    parser.add_argument("--batch-size", type=int, help="instead of the spec's evaluate.batch_size")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else copy_workflow(Path(tmp) / "demo")
        if not args.workdir:
            snakemake(workdir, "train", "--config", f"specs={args.spec}")
        result = measure(workdir, args.spec, args.repeats, args.batch_size)
    print(f"prompts: {result['prompts']} (batch size {result['batch_size']})")
    print(f"batched_s: {result['batched_s']:.3f}")
    print(f"one_at_a_time_s: {result['one_at_a_time_s']:.3f}")
    print(f"batched_tokens_per_s: {result['batched_tokens_per_s']:.0f}")
    print(f"one_at_a_time_tokens_per_s: {result['one_at_a_time_tokens_per_s']:.0f}")
    print(f"same_outputs: {result['same_outputs']:.3f}")
    print(f"batched_vs_one_at_a_time: {result['one_at_a_time_s'] / result['batched_s']:.1f}")


if __name__ == "__main__":
    main()
