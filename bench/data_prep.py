"""Data preparation at scale: tunemake's shard/clean/tokenize/audit against `datasets.map`.

On a generated JSONL source (default 1,000,000 prompt/completion records) and one tokenizer
(a local model folder, so no model is trained; the environment and base_model steps run
before the clock starts), in the same run:
- `prep_vs_datasets_map`: records/s of `snakemake data` (reading, cleaning, sharding,
  tokenizing, auditing) over records/s of `datasets.load_dataset("json")` +
  `Dataset.map(batched=True, num_proc=2)` tokenizing the same records (target >= 1.0);
- `edit_vs_noop`: wall time of the rerun after editing one record over a no-op `snakemake data`
  on the same workflow (target <= 3.0);
- `edit_one_record_vs_full`: the same rerun over the full preparation.
It also prints where the time went (the manifests' timings and the Snakemake benchmark files,
summed per step) for the full build and for the edit rerun, and `tunemake_edit_s`, which
`edit_growth` compares across sizes (the edit at 4M records over the edit at 1M, target <= 1.3):

    python bench/data_prep.py [--records 1000000] [--shards N] [--edit-baseline S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake  # noqa: E402

# Records per shard held constant across sizes, so an edit's shard costs the same at 1M and 4M.
RECORDS_PER_SHARD = 31_250
WORDS = "zero one two three four five six seven eight nine".split()


def write_records(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for _ in range(count):
            number = str(rng.randrange(10**9))
            completion = " ".join(WORDS[int(d)] for d in number)
            handle.write(json.dumps({"prompt": f"Spell {number}:", "completion": completion}) + "\n")


def build_tiny_model(folder: Path, texts: list[str]) -> None:
    """A local model folder (config, weights, tokenizer) for model.path."""
    from scripts.base_model import build_model_from_config, train_tokenizer
    from scripts.compiler.spec import check_slice

    build = check_slice("model", {"build": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}})["build"]
    tokenizer = train_tokenizer(texts, 512)
    tokenizer.save_pretrained(str(folder))
    build_model_from_config(build, tokenizer, folder)


def write_spec(workdir: Path, shards: int) -> None:
    spec = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    spec["model"] = {"path": str(workdir / "models/tiny")}
    spec["data"] = {
        "sources": [
            {"path": "data/bench/records.jsonl", "fields": {"prompt": "prompt", "completion": "completion"}}
        ],
        "num_shards": shards,
    }
    (workdir / "specs/demo.yaml").unlink()
    (workdir / "specs/bench.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def model_key(workdir: Path) -> str:
    """The content key of the bench spec's base model (results/models/<key>/model)."""
    from scripts.compiler.spec import load_specs

    here = Path.cwd()
    os.chdir(workdir)  # spec paths are relative to the workflow folder
    try:
        (run,) = load_specs([Path("specs/bench.yaml")])
    finally:
        os.chdir(here)
    return run.keys["model"]


def datasets_map_seconds(source: Path, model: Path, cache: Path) -> float:
    """The baseline a user would write: load the JSONL, map a batched tokenizer over 2 processes."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    eos = tokenizer.eos_token_id

    def encode(batch):
        prompts = tokenizer(batch["prompt"])["input_ids"]
        completions = tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
        ids = [p + c + [eos] for p, c in zip(prompts, completions)]
        labels = [[-100] * len(p) + c + [eos] for p, c in zip(prompts, completions)]
        return {"input_ids": ids, "labels": labels}

    data = datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(cache))
    data.map(encode, batched=True, num_proc=2, remove_columns=data.column_names)
    return time.perf_counter() - start


def edit_one_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    record = json.loads(lines[middle])
    record["completion"] += " (edited)"
    lines[middle] = json.dumps(record) + "\n"
    path.write_text("".join(lines))


def step_seconds(workdir: Path, since: float = 0.0) -> dict:
    """Per data step: jobs, summed wall seconds (Snakemake benchmark files: process start
    included) and summed manifest timings (the script's own work), of files written after
    `since` (a time.time())."""
    out = {}
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        if tsv.stat().st_mtime < since:
            continue
        step = tsv.stem if tsv.parents[1].name in ("data", "tokens", "benchmarks") else tsv.parent.name
        entry = out.setdefault(step, {"jobs": 0, "wall_s": 0.0})
        entry["jobs"] += 1
        entry["wall_s"] = round(entry["wall_s"] + float(tsv.read_text().splitlines()[1].split("\t")[0]), 2)
    for manifest in (workdir / "results").rglob("*manifest.json"):
        if manifest.stat().st_mtime < since:
            continue
        body = json.loads(manifest.read_text())
        if body.get("step") in out or body.get("step") == "audit_data":
            entry = out.setdefault(body["step"], {"jobs": 0, "wall_s": 0.0})
            for name, value in body.get("timings", {}).items():
                entry[name] = round(entry.get(name, 0.0) + value, 2)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--shards", type=int, help=f"data.num_shards (default: one per {RECORDS_PER_SHARD} records)"
    )
    parser.add_argument(
        "--edit-baseline", type=float, help="tunemake_edit_s at 1M records: prints edit_growth"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip datasets.map (for edit_growth)")
    args = parser.parse_args(argv)
    args.shards = args.shards or max(1, round(args.records / RECORDS_PER_SHARD))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_workflow(Path(tmp) / "wf")
        source = workdir / "data/bench/records.jsonl"
        write_records(source, args.records)
        sample = [json.loads(line) for line in source.read_text().splitlines()[:5000]]
        build_tiny_model(workdir / "models/tiny", [f"{r['prompt']} {r['completion']}" for r in sample])
        write_spec(workdir, args.shards)
        # environment + the tokenizer's check run before the clock: they are not data preparation
        snakemake(workdir, "results/environment.json", f"results/models/{model_key(workdir)}/model")
        start, wall = time.perf_counter(), time.time()
        ran = jobs_run(snakemake(workdir, "data", timeout=7200))
        full = time.perf_counter() - start
        full_steps = step_seconds(workdir, since=wall)
        edit_one_line(source)
        start, wall = time.perf_counter(), time.time()
        rerun_jobs = jobs_run(snakemake(workdir, "data"))
        rerun = time.perf_counter() - start
        edit_steps = step_seconds(workdir, since=wall)
        start = time.perf_counter()
        snakemake(workdir, "data")
        noop = time.perf_counter() - start
        if args.no_baseline:
            baseline = float("nan")
        else:
            baseline = datasets_map_seconds(source, workdir / "models/tiny", Path(tmp) / "hf-cache")
    print(f"records: {args.records}  shards: {args.shards}")
    print(f"jobs full: {dict(ran)}  jobs after one edit: {dict(rerun_jobs)}")
    print(f"full build, per step: {full_steps}")
    print(f"edit rerun, per step: {edit_steps}")
    print(f"tunemake_full_s: {full:.2f}  tunemake_edit_s: {rerun:.2f}  noop_s: {noop:.2f}")
    print(f"datasets_map_s: {baseline:.2f}")
    print(f"prep_vs_datasets_map: {baseline / full:.2f}")
    print(f"edit_vs_noop: {rerun / noop:.2f}")
    print(f"edit_one_record_vs_full: {rerun / full:.3f}")
    if args.edit_baseline:
        print(f"edit_growth: {rerun / args.edit_baseline:.2f}")


if __name__ == "__main__":
    main()
