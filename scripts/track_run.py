"""Log one run to one experiment tracker, post hoc, from the files the build wrote: the spec as
parameters, the run name and content keys as tags, the training curves (train/log.jsonl), the
evaluation metrics of base and tuned model (evaluate/report.json) and the report files. A runtime
choice (`--config trackers=...`): nothing here enters a content key. Rerunning replaces the run.

    python -m scripts.track_run --tracker tensorboard --run demo --spec-json @spec.json \
        --keys-json @keys.json --log results/runs/demo/train/log.jsonl \
        --report results/runs/demo/evaluate/report.json --artifacts results/runs/demo/model_card.md \
        --out results/runs/demo/track/tensorboard \
        --manifest results/runs/demo/track/tensorboard.manifest.json

MLflow: MLFLOW_TRACKING_URI (default: the file store results/mlruns), MLFLOW_EXPERIMENT_NAME
(default tunemake). W&B: WANDB_MODE (default offline unless WANDB_API_KEY or a `wandb login`),
WANDB_PROJECT (default tunemake); the run's files go under the --out folder's parent, in wandb/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from scripts.common.cli import fail, json_arg
from scripts.common.files import read_json, read_jsonl
from scripts.common.manifest import write_manifest
from scripts.common.report_text import with_benchmarks
from scripts.compiler.tracker_choice import PACKAGES, TRACKERS
from scripts.tracking.trackers import (
    PROJECT,
    Record,
    build_record,
    mlflow_uri,
    remote_address,
    unreachable,
    wandb_mode,
    without_credentials,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracker", required=True, choices=TRACKERS)
    parser.add_argument("--run", required=True, help="the run name")
    parser.add_argument("--spec-json", required=True, help="the run's compiled spec (JSON or @file)")
    parser.add_argument("--keys-json", required=True, help="the run's content keys (JSON or @file)")
    parser.add_argument("--spec-file", default=None, help="the spec file the run comes from (a tag)")
    parser.add_argument("--log", required=True, help="the train step's log.jsonl")
    parser.add_argument("--report", required=True, help="the evaluate step's report.json")
    parser.add_argument(
        "--benchmarks",
        nargs="*",
        default=[],
        help="the run's benchmarks.json (lm-eval), when it has benchmarks",
    )
    parser.add_argument("--artifacts", nargs="*", default=[], help="report files to attach")
    parser.add_argument("--out", required=True, help="results/runs/<run>/track/<tracker>")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment", default=None, help="results/environment.json (provenance)")
    return parser.parse_args(argv)


def spec_texts(spec: dict, keys: dict) -> dict[str, str]:
    """The spec and its content keys as Markdown, for trackers that show text."""
    table = "\n".join(f"| {name} | `{key}` |" for name, key in keys.items())
    return {
        "spec": f"```yaml\n{yaml.safe_dump(spec, sort_keys=False)}```",
        "content_keys": f"| step | content key |\n|---|---|\n{table}",
    }


def log_to(tracker: str, record: Record, out: Path) -> dict:
    """Hand the record to one tracker's writer (imported here: only its package is loaded)."""
    from scripts.tracking import writers as tracker_writers

    if tracker == "tensorboard":
        return tracker_writers.write_tensorboard(record, out)
    if tracker == "mlflow":
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        return tracker_writers.write_mlflow(record, mlflow_uri(), experiment)
    return tracker_writers.write_wandb(
        record, out.parent, wandb_mode(), os.environ.get("WANDB_PROJECT", PROJECT)
    )


SETTING = {
    "mlflow": "MLFLOW_TRACKING_URI; fix the address or start the server",
    "wandb": "WANDB_BASE_URL, default https://api.wandb.ai; check the network, or set WANDB_MODE=offline and `wandb sync` later",
}


def check_reachable(tracker: str) -> None:
    """Fail in seconds, with one line, when a remote tracker's server cannot be reached (its client
    would retry for minutes and end with a long traceback). Local trackers are not checked."""
    address = remote_address(tracker)
    reason = unreachable(address) if address else None
    if reason:
        fail(
            f"the {tracker} tracker cannot reach {address}: {reason} (from {SETTING[tracker]}; or leave "
            f"{tracker} out of --config trackers: the build's results are unaffected)"
        )


def manifest_fields(tracker: str, record: Record, logged: dict) -> dict:
    counts = {
        "params": len(record.params),
        "tags": len(record.tags),
        "curve_points": len(record.curves),
        "metrics": len(record.evaluation),
        "artifacts": len(record.artifacts),
    }
    details = {
        "tracker": tracker,
        "location": without_credentials(logged["location"]),
        "run_id": logged["run_id"],
        "track_id": record.track_id,
        "final_step": record.final_step,
    }
    details |= {k: logged[k] for k in ("experiment_id", "replaced", "mode") if k in logged}
    return {"counts": counts, "details": details, "outputs": logged.get("files", [])}


def main(argv=None) -> int:
    args = parse_args(argv)
    check_reachable(args.tracker)  # before the package import: seconds, not the import's
    module, pin = PACKAGES[args.tracker]
    try:
        __import__(module)
    except ImportError:
        fail(f"the {args.tracker} tracker needs its package: python -m pip install {pin}")
    started = time.perf_counter()
    spec, keys = json_arg(args.spec_json), json_arg(args.keys_json)
    benchmarks = [p for p in args.benchmarks if p]  # Snakemake writes an empty input list as ''
    inputs = [args.log, args.report, *benchmarks, *args.artifacts]
    for path in inputs:
        if not Path(path).is_file():
            fail(f"{path}: not found (run `snakemake export --cores 2` first; track_run reads what it wrote)")
    record = build_record(
        args.run,
        spec,
        keys,
        read_jsonl(args.log),
        with_benchmarks(read_json(args.report), read_json(benchmarks[0]) if benchmarks else None),
        [*args.artifacts, *benchmarks],
        spec_file=args.spec_file,
        texts=spec_texts(spec, keys),
    )
    try:
        logged = log_to(args.tracker, record, Path(args.out))
    except Exception as exc:  # the tracker's own errors (HTTP, auth, its server): one line, no traceback
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        fail(
            f"the {args.tracker} tracker failed: {type(exc).__name__}: {reason} (the build's results are unaffected)"
        )
    fields = manifest_fields(args.tracker, record, logged)
    write_manifest(
        args.manifest,
        "track_run",
        spec,
        run=args.run,
        inputs=inputs,
        timings={"total": time.perf_counter() - started},
        environment=args.environment,
        **fields,
    )
    print(f"{args.run}: logged to {args.tracker} ({fields['details']['location']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
