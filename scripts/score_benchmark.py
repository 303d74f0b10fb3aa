"""Score one model on one lm-evaluation-harness task, once per content key.

The harness's own Python API with its HF backend (`simple_evaluate(model="hf", ...)`), called
as its CLI calls it (`lm_eval run --model hf --model_args pretrained=<folder> --tasks <task>
--device <device> ...`), so the numbers equal the CLI's on the same folder. A task YAML in the
workflow folder is found through the harness's include path (its own folder only: the bundled
tasks are not indexed); a harness task name through the bundled index.

    python -m scripts.score_benchmark --spec-json @slice.json --model results/models/KEY/model \
        --out results/benchmarks/KEY/scores.json --manifest results/benchmarks/KEY/scores.manifest.json
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.files import atomic_write_json
from scripts.common.manifest import write_manifest
from scripts.compiler.benchmark_rules import is_local, task_name


def harness_arguments(spec: dict, model: str, device: str) -> dict:
    """simple_evaluate's keyword arguments, as the CLI builds them from the same flags."""
    settings = spec["settings"]
    return dict(
        model="hf",
        model_args={"pretrained": model},
        tasks=[task_name(spec["task"])],
        num_fewshot=settings["num_fewshot"],
        batch_size=settings["batch_size"],
        device=device,
        limit=settings["limit"],
        gen_kwargs=settings["gen_kwargs"] or None,
        apply_chat_template=settings["apply_chat_template"],
        log_samples=False,
    )


def _number(value) -> float | None:
    """A harness value as a JSON number; 'N/A' (no stderr) and NaN become None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def scores(results: dict) -> dict:
    """{task: {metric: {value, stderr}}} from the harness's results (keys 'metric,filter' and
    'metric_stderr,filter'; the filter named only when it is not 'none')."""
    out = {}
    for task, values in results["results"].items():
        metrics = {}
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else f"{metric} ({filt})"
            stderr = values.get(f"{metric}_stderr,{filt}")
            if _number(value) is not None:
                metrics[name] = {"value": _number(value), "stderr": _number(stderr)}
        if metrics:
            out[task] = metrics
    return out


def higher_is_better(results: dict) -> dict:
    return {
        task: {m: bool(v) for m, v in values.items()}
        for task, values in results.get("higher_is_better", {}).items()
    }


def samples(results: dict) -> dict:
    return {task: int(n["effective"]) for task, n in (results.get("n-samples") or {}).items()}


def input_files(spec: dict, model: str) -> list[str]:
    """The model's manifest (its content) and the task's own files, for the manifest's inputs."""
    manifest = Path(model).with_name(Path(model).name + ".manifest.json")
    identity = spec["identity"]
    task = (
        [identity["file"], *identity["data_sha256"], *identity["code_sha256"]] if "file" in identity else []
    )
    return [str(manifest)] * manifest.is_file() + task


def run_harness(spec: dict, model: str, threads: int) -> dict:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(threads)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    local = is_local(spec["task"])
    manager = TaskManager(
        include_path=str(Path(spec["task"]).parent) if local else None, include_defaults=not local
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return simple_evaluate(**harness_arguments(spec, model, device), task_manager=manager)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the score's slice (benchmarks.score_slice)")
    parser.add_argument("--model", required=True, help="the model folder (base or merged)")
    parser.add_argument("--out", required=True, help="scores.json to write")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    spec = json_arg(args.spec_json)
    start = time.perf_counter()
    try:
        results = run_harness(spec, args.model, args.threads)
    except Exception as exc:  # the harness raises bare exceptions for bad tasks and data
        fail(f"lm-evaluation-harness could not score {spec['task']} on {args.model}: {exc}")
    table = scores(results)
    if not table:
        fail(f"lm-evaluation-harness returned no numeric metric for {spec['task']}: {results['results']}")
    out = {
        "task": spec["task"],
        "harness": spec["harness"],
        "model": args.model,
        "scores": table,
        "higher_is_better": higher_is_better(results),
        "samples": samples(results),
    }
    atomic_write_json(args.out, out)
    write_manifest(
        args.manifest,
        "score_benchmark",
        spec,
        inputs=input_files(spec, args.model),
        outputs=[args.out],
        counts={"samples": sum(out["samples"].values()), "metrics": sum(len(m) for m in table.values())},
        details={"scores": table},
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    for task, metrics in table.items():
        for name, value in metrics.items():
            print(f"{task} {name}: {value['value']:.4g} (stderr {value['stderr']})", file=sys.stderr)


if __name__ == "__main__":
    main()
