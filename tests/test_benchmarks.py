"""lm-evaluation-harness benchmarks as cached targets (issue 18), through the real workflow.

The demo speller and a second run of it at another learning rate (specs/bench.yaml), both
with the repo's two local harness tasks (tasks/spell_digits.yaml: generation scored by exact
match; tasks/digit_choice.yaml: multiple choice by log-likelihood). The demo run is the
session's demo build (tests/workflow_fixtures.py), copied, with the benchmarks added to its spec:
only the second run trains. What a user checks: the base model is scored once per task for both
runs; the scores equal what the harness's own CLI prints for the same folders; the tuned model
beats the base; the model card's model-index lists them; editing a task file reruns only the
benchmark jobs; a missing task file or an unknown task name fails before any job starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.common.report_text import with_benchmarks
from tests.workflow_fixtures import REPO, copy_built, copy_workflow, jobs_run, snakemake

SPEC = "specs/bench.yaml"
SPECS = f"specs/demo.yaml,{SPEC}"  # two runs on one base: the demo (lr 3e-3) and bench (lr 4e-3)
RUNS = ["demo", "bench"]
LIMIT = 100
BATCH = 16


def bench_spec(demo: dict, **train) -> dict:
    spec = dict(demo)
    spec["evaluate"] = {
        **demo["evaluate"],
        "benchmarks": [
            {"task": "tasks/spell_digits.yaml", "limit": LIMIT, "batch_size": BATCH},
            {"task": "tasks/digit_choice.yaml", "limit": LIMIT, "batch_size": BATCH},
        ],
    }
    spec["train"] = {**demo["train"], **train}
    return spec


def scores_by_model(workdir: Path) -> dict:
    """(model kind, task) -> scores.json, from the score targets' manifests."""
    out = {}
    for manifest in sorted((workdir / "results/benchmarks").glob("*/scores.manifest.json")):
        m = json.loads(manifest.read_text())
        kind = "base" if "base" in m["spec"]["model"] else m["spec"]["model"]["merged"]
        out.setdefault((kind, m["spec"]["task"]), []).append(
            json.loads((manifest.parent / "scores.json").read_text())
        )
    return out


@pytest.fixture(scope="module")
def build(demo_build, tmp_path_factory):
    workdir = copy_built(demo_build, tmp_path_factory.mktemp("benchmarks") / "wf")
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    (workdir / "specs/demo.yaml").write_text(yaml.safe_dump(bench_spec(demo), sort_keys=False))
    (workdir / SPEC).write_text(yaml.safe_dump(bench_spec(demo, learning_rate=4e-3), sort_keys=False))
    proc = snakemake(workdir, "export", "--config", f"specs={SPECS}", timeout=1200)
    return workdir, proc


def harness_cli(workdir: Path, model: str, out: Path) -> dict:
    """The harness's own CLI on a folder, as a user runs it; returns its results JSON."""
    cli = Path(sys.executable).with_name("lm_eval")
    cmd = [
        str(cli), "run", "--model", "hf", "--model_args", f"pretrained={model}",
        "--tasks", "spell_digits", "digit_choice", "--include_path", "tasks",
        "--device", "cpu", "--batch_size", str(BATCH), "--limit", str(LIMIT), "--output_path", str(out),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run(cmd, cwd=workdir, env=env, check=True, capture_output=True, text=True, timeout=600)
    (found,) = out.rglob("results_*.json")
    return json.loads(found.read_text())["results"]


@pytest.mark.slow
def test_sweep_scores_its_base_once(build):
    workdir, proc = build
    ran = jobs_run(proc)
    # 2 tasks x (1 shared base + 2 tuned models); the demo came trained and evaluated
    assert ran["score_benchmark"] == 6 and ran["compare_benchmarks"] == 2, ran
    assert ran["train_model"] == 1 and ran["evaluate_model"] == 1 and not ran["base_model"], ran
    scores = scores_by_model(workdir)
    base = {task for kind, task in scores if kind == "base"}
    assert base == {"tasks/spell_digits.yaml", "tasks/digit_choice.yaml"}
    assert all(len(v) == 1 for v in scores.values()) and len(scores) == 6, scores


@pytest.mark.slow
def test_the_docs_quote_the_table_make_demo_bench_prints(build):
    """docs/evaluation.md quotes `make demo-bench` (examples/demo_benchmarks.yaml); the demo run
    here is that spec (the demo with its benchmarks), so its table is the one the docs must show."""
    workdir, _ = build
    example = yaml.safe_load((REPO / "examples/demo_benchmarks.yaml").read_text())
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    benchmarks = [{**entry, "batch_size": BATCH} for entry in example["evaluate"]["benchmarks"]]
    assert {
        **example,
        "description": None,
        "evaluate": {**example["evaluate"], "benchmarks": benchmarks},
    } == {
        **demo,
        "description": None,
    }
    printed = (workdir / "results/runs/demo/benchmarks.md").read_text().splitlines()
    rows = [line for line in printed if line.startswith("| ") and ("↑" in line or "↓" in line)]
    docs = (REPO / "docs/evaluation.md").read_text()
    assert len(rows) == 3 and [row for row in rows if row not in docs] == [], rows


@pytest.mark.slow
def test_scores_equal_the_harness_cli_and_the_tuned_model_wins(build, tmp_path):
    workdir, _ = build
    run = RUNS[1]
    table = json.loads((workdir / f"results/runs/{run}/benchmarks.json").read_text())
    base_folder = next(p for p in (workdir / "results/models").glob("*/model") if p.is_dir())
    for side, folder in (
        ("tuned", f"results/runs/{run}/export"),
        ("base", str(base_folder.relative_to(workdir))),
    ):
        cli = harness_cli(workdir, folder, tmp_path / side)
        for row in table["rows"]:
            value, stderr = (
                cli[row["name"]][f"{row['metric']},none"],
                cli[row["name"]][f"{row['metric']}_stderr,none"],
            )
            assert row[side] == pytest.approx(value, abs=1e-12), (side, row)
            assert row[f"{side}_stderr"] == pytest.approx(float(stderr), abs=1e-12), (side, row)
    metrics = {f"{r['name']}/{r['metric']}": r for r in table["rows"]}
    assert metrics["spell_digits/exact_match"]["tuned"] >= 0.9 > metrics["spell_digits/exact_match"]["base"]
    assert metrics["digit_choice/acc"]["delta"] > 0.2, metrics


@pytest.mark.slow
def test_card_model_index_lists_the_scores(build):
    workdir, _ = build
    run = RUNS[1]
    card = (workdir / f"results/runs/{run}/export/README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    results = front["model-index"][0]["results"]
    listed = {
        (r["dataset"]["name"], m["type"]): m["value"]
        for r in results
        if r["dataset"]["type"].startswith("tasks/")
        for m in r["metrics"]
    }
    table = json.loads((workdir / f"results/runs/{run}/benchmarks.json").read_text())
    assert listed == {(r["name"], r["metric"]): r["tuned"] for r in table["rows"]}
    assert "### Benchmarks (lm-evaluation-harness" in card and "digit_choice" in card
    snakemake(workdir, "compare", "--config", f"specs={SPECS}")  # the table and plots of all runs
    header = (workdir / "results/compare/metrics.md").read_text()
    assert "digit_choice/acc ↑" in header and "spell_digits/exact_match ↑" in header
    assert (workdir / f"results/runs/{run}/report/benchmarks.html").stat().st_size > 0


@pytest.mark.slow
def test_editing_a_task_reruns_only_its_benchmark_jobs(build):
    workdir, _ = build
    planned = jobs_run(snakemake(workdir, "-n", "export", "--config", f"specs={SPECS}"))
    assert not planned, planned
    task = workdir / "tasks/digit_choice.yaml"
    original, stat = task.read_text(), task.stat()
    task.write_text(original.replace("version: 1", "version: 2"))
    # Snakemake's plan (-n) is what the run executes; the rescoring itself: the build above
    planned = jobs_run(snakemake(workdir, "-n", "export", "--config", f"specs={SPECS}"))
    task.write_text(original)
    os.utime(task, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as it was: the build above holds
    assert planned["score_benchmark"] == 3, planned  # one task: its base and the two tuned models
    assert set(planned) <= {
        "score_benchmark",
        "compare_benchmarks",
        "model_card",
        "export_model",
        "smoke_test",
        "export",
    }
    # a spec edit of one task's settings plans only that task's scores (and the tables after them)
    before = {path: (workdir / path).read_text() for path in SPECS.split(",")}
    for path, text in before.items():  # the same edit in both runs' specs
        spec = yaml.safe_load(text)
        spec["evaluate"]["benchmarks"][0]["limit"] = 50
        (workdir / path).write_text(yaml.safe_dump(spec, sort_keys=False))
    planned = jobs_run(snakemake(workdir, "-n", "export", "--config", f"specs={SPECS}"))
    assert (
        planned["score_benchmark"] == 3 and "evaluate_model" not in planned and "train_model" not in planned
    )
    why = snakemake(workdir, "why", "--config", f"specs={SPECS}").stdout
    assert f"evaluate.benchmarks[0].limit: {LIMIT} -> 50" in why, why
    reruns = [line for line in why.splitlines() if "reruns:" in line]
    assert reruns and all(
        "score_benchmark, compare_benchmarks" in r and "evaluate_model" not in r for r in reruns
    )
    for path, text in before.items():  # back: their scores are still there, nothing to run
        (workdir / path).write_text(text)
    assert not jobs_run(snakemake(workdir, "-n", "export", "--config", f"specs={SPECS}"))


@pytest.mark.slow
def test_missing_task_or_unknown_name_fails_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    demo = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    for task, expect in (
        ("tasks/spell_digit.yaml", "task file 'tasks/spell_digit.yaml' not found"),
        ("hellaswg", "unknown harness task 'hellaswg' (lm-eval 0.4.13); did you mean 'hellaswag'?"),
    ):
        spec = bench_spec(demo)
        spec["evaluate"]["benchmarks"][0]["task"] = task
        (workdir / SPEC).write_text(yaml.safe_dump(spec, sort_keys=False))
        proc = snakemake(workdir, "-n", "export", "--config", f"specs={SPEC}", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and expect in out, out[-3000:]
        assert SPEC in out and "evaluate.benchmarks[0].task" in out, out[-3000:]
        assert not (workdir / "results/benchmarks").exists()


def test_a_harness_name_plans_its_jobs_up_to_the_network():
    """examples/qwen_chat_lora.yaml names arc_easy and hellaswag: the scan of the installed
    harness finds them without loading its index (tests/test_examples.py dry-runs the spec)."""
    from scripts.compiler.benchmark_rules import unknown_harness_tasks

    assert unknown_harness_tasks([("x.yaml", 0, "arc_easy"), ("x.yaml", 1, "hellaswag")]) == []


def test_benchmarks_join_the_report_metrics_for_the_table_and_plots():
    report = {"run": "r", "metrics": {"base": {"exact_match": 0.0}, "tuned": {"exact_match": 1.0}}}
    bench = {
        "metrics": {"base": {"t/acc": 0.3}, "tuned": {"t/acc": 0.6}},
        "higher_is_better": {"t/acc": True},
        "rows": [{"name": "t", "metric": "acc", "delta": 0.3, "higher_is_better": True}],
    }
    joined = with_benchmarks(report, bench)
    assert joined["metrics"]["tuned"] == {"exact_match": 1.0, "t/acc": 0.6}
    assert joined["metrics"]["base"] == {"exact_match": 0.0, "t/acc": 0.3}
    assert joined["improved"] == {"t/acc": True}
    assert with_benchmarks(report, None) is report


@pytest.mark.slow
def test_a_tracker_logs_the_benchmark_deltas(build):
    """Switching TensorBoard on logs each run's benchmark scores beside its validation metrics
    and reruns no benchmark job."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir, _ = build
    ran = jobs_run(snakemake(workdir, "export", "--config", f"specs={SPECS}", "trackers=tensorboard"))
    assert ran["track_run"] == 2 and "score_benchmark" not in ran and "evaluate_model" not in ran, ran
    run = RUNS[1]
    table = json.loads((workdir / f"results/runs/{run}/benchmarks.json").read_text())
    events = EventAccumulator(
        str(workdir / f"results/runs/{run}/track/tensorboard"), size_guidance={"scalars": 0}
    )
    events.Reload()
    for side in ("base", "tuned"):
        logged = events.Scalars(f"eval/{side}/digit_choice/acc")[0].value
        assert logged == pytest.approx(table["metrics"][side]["digit_choice/acc"]), side
