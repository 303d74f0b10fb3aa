"""Experiment trackers as a runtime choice (issue 19, part 2): `--config trackers=...` adds only
track_run jobs, each tracker's own reader finds the spec, keys, curves, metrics and report files,
a rerun replaces the tracker run, and switching trackers off reruns nothing. Offline: W&B in
offline mode, MLflow on its local file store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.common.files import read_json, read_jsonl
from scripts.common.manifest import validate_manifest
from scripts.compiler.tracker_choice import PACKAGES, TrackerError, check_installed, parse_trackers
from scripts.tracking.trackers import (
    evaluation_metrics,
    flat_params,
    mlflow_uri,
    remote_address,
    track_id,
    training_curves,
    wandb_mode,
    without_credentials,
)
from tests.workflow_fixtures import jobs_run, snakemake

REPO = Path(__file__).resolve().parents[1]
ALL = "trackers=tensorboard,mlflow,wandb"
EXPENSIVE = {"shard_data", "base_model", "tokenize_shard", "audit_data", "train_model"}
EXPENSIVE |= {"evaluate_model", "merge_model", "model_card", "export_model", "smoke_test"}
RUN = "results/runs/demo"


# ---- pure functions -------------------------------------------------------------------------


def test_tracker_names_parse_from_the_command_line_or_a_profile_list():
    assert parse_trackers("tensorboard,mlflow") == ["tensorboard", "mlflow"]
    assert parse_trackers(["wandb", "wandb"]) == ["wandb"]
    assert parse_trackers(None) == parse_trackers("") == parse_trackers("none") == []


def test_an_unknown_tracker_gets_a_did_you_mean():
    with pytest.raises(TrackerError, match="unknown tracker 'mlfow'.*did you mean 'mlflow'"):
        parse_trackers("tensorboard,mlfow")
    with pytest.raises(TrackerError, match="choose from tensorboard, mlflow, wandb"):
        parse_trackers("comet")


def test_a_missing_tracker_package_names_the_pip_line():
    with pytest.raises(TrackerError, match=r"python -m pip install wandb==0\.31\.0"):
        check_installed(["tensorboard", "wandb"], find_spec=lambda m: None if m == "wandb" else object())
    check_installed(["wandb"], find_spec=lambda m: object())


def test_the_pip_lines_are_the_pinned_versions():
    pins = (REPO / "requirements.txt").read_text().splitlines()
    assert all(pin in pins for _, pin in PACKAGES.values())


def test_records_flatten_the_spec_and_keep_numbers_with_their_steps():
    params = flat_params(
        {"train": {"lora": {"r": 16}, "learning_rate": 0.003}, "evaluate": {"metrics": ["bleu"]}}
    )
    assert params == {"train.lora.r": "16", "train.learning_rate": "0.003", "evaluate.metrics.0": "bleu"}
    log = [{"step": 20, "loss": 2.0, "epoch": 0.5}, {"step": 10, "loss": 3.0, "eval_loss": float("nan")}]
    assert training_curves(log) == [
        (10, "train/loss", 3.0),
        (20, "train/epoch", 0.5),
        (20, "train/loss", 2.0),
    ]
    report = {"metrics": {"base": None, "tuned": {"exact_match": 0.9, "bleu": 12}}}
    assert evaluation_metrics(report) == {"eval/tuned/exact_match": 0.9, "eval/tuned/bleu": 12.0}
    assert (
        track_id("demo", {"train": "a"})
        == track_id("demo", {"train": "a"})
        != track_id("demo", {"train": "b"})
    )


def test_environment_choices():
    assert wandb_mode({}, has_login=lambda: False) == "offline"
    assert wandb_mode({}, has_login=lambda: True) == "online"
    assert wandb_mode({"WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode({"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}) == "offline"
    assert mlflow_uri({"MLFLOW_TRACKING_URI": "http://host:5000"}) == "http://host:5000"
    assert mlflow_uri({}, "x/mlruns").startswith("file:///") and mlflow_uri({}, "x/mlruns").endswith(
        "/x/mlruns"
    )
    assert without_credentials("https://user:pw@host:5000/x") == "https://host:5000/x"


UNREACHABLE = "http://127.0.0.1:9"  # the discard port on loopback: nothing listens there


def test_only_remote_trackers_are_checked_for_their_server():
    assert remote_address("mlflow", {"MLFLOW_TRACKING_URI": "http://u:pw@host:5000"}) == "http://host:5000"
    assert remote_address("mlflow", {}) is None  # the local file store
    assert remote_address("mlflow", {"MLFLOW_TRACKING_URI": "sqlite:///m.db"}) is None
    assert remote_address("wandb", {"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}) is None
    assert remote_address("wandb", {"WANDB_API_KEY": "k"}) == "https://api.wandb.ai"
    assert remote_address("wandb", {"WANDB_MODE": "online", "WANDB_BASE_URL": UNREACHABLE}) == UNREACHABLE
    assert remote_address("tensorboard", {"MLFLOW_TRACKING_URI": UNREACHABLE}) is None


@pytest.mark.parametrize(
    ("tracker", "setting"),
    [("mlflow", "MLFLOW_TRACKING_URI"), ("wandb", "WANDB_BASE_URL, default https://api.wandb.ai")],
)
def test_an_unreachable_tracker_fails_in_seconds_with_one_line(tmp_path, tracker, setting):
    env = dict(os.environ, MLFLOW_TRACKING_URI=UNREACHABLE, WANDB_MODE="online", WANDB_BASE_URL=UNREACHABLE)
    args = ["--tracker", tracker, "--run", "demo", "--spec-json", "{}", "--keys-json", "{}"]
    args += ["--log", "log.jsonl", "--report", "report.json", "--out", str(tmp_path / "out")]
    args += ["--manifest", str(tmp_path / "m.json")]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.track_run", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert time.monotonic() - start < 15
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()  # one line
    assert line.startswith(
        f"error: the {tracker} tracker cannot reach {UNREACHABLE}: Connection refused (from {setting}"
    )
    assert f"leave {tracker} out of --config trackers: the build's results are unaffected" in proc.stderr
    assert not (tmp_path / "m.json").exists()


# ---- the demo, tracked ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked(demo_build, tmp_path_factory):
    """The built demo, copied, then `snakemake export` with every tracker (offline, no login)."""
    workdir = tmp_path_factory.mktemp("trackers") / "wf"
    shutil.copytree(demo_build, workdir, symlinks=True)
    with pytest.MonkeyPatch.context() as env:
        for name in ("WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
            env.delenv(name, raising=False)
        env.setenv("WANDB_MODE", "offline")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            env.setenv(name, str(workdir.parent / name.lower()))
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # this process reads the file store too
        before = snakemake(workdir, "export")
        on = snakemake(workdir, "export", "--config", ALL)
        yield workdir, before, on


@pytest.mark.slow
def test_switching_trackers_on_runs_only_the_track_jobs(tracked):
    workdir, before, on = tracked
    assert not jobs_run(before)
    jobs = jobs_run(on)
    assert jobs["track_run"] == 3
    # the plots the trackers attach (built by the default target; `export` alone had not needed them)
    assert set(jobs) <= {"track_run", "plot_training", "plot_metrics", "export"}, jobs
    assert not set(jobs) & EXPENSIVE
    for tracker in ("tensorboard", "mlflow", "wandb"):
        validate_manifest(read_json(workdir / RUN / f"track/{tracker}.manifest.json"))


def assert_curve(curve, losses):
    """The same steps, the same values (TensorBoard stores float32)."""
    assert [step for step, _ in curve] == [step for step, _ in losses] and len(curve) > 5
    assert [value for _, value in curve] == pytest.approx([value for _, value in losses], rel=1e-6)


def demo_facts(workdir: Path):
    log = read_jsonl(workdir / RUN / "train/log.jsonl")
    losses = [(e["step"], e["loss"]) for e in log if "loss" in e]
    report = read_json(workdir / RUN / "evaluate/report.json")
    return losses, report["metrics"]["tuned"]["exact_match"], report["metrics"]["base"]["exact_match"]


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_curves_and_metrics(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = tracked[0]
    losses, tuned, base = demo_facts(workdir)
    events = EventAccumulator(str(workdir / RUN / "track/tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    curve = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert_curve(curve, losses)
    assert events.Scalars("eval/tuned/exact_match")[0].value == pytest.approx(tuned)
    assert events.Scalars("eval/base/exact_match")[0].value == pytest.approx(base)
    tags = events.Tags()
    assert {"spec/text_summary", "model_card/text_summary"} <= set(tags["tensors"])
    assert {"report/loss", "report/metrics"} <= set(tags["images"])


@pytest.mark.slow
def test_mlflow_run_holds_spec_keys_curves_and_artifacts(tracked):
    from mlflow import MlflowClient

    workdir = tracked[0]
    losses, tuned, _ = demo_facts(workdir)
    client = MlflowClient(tracking_uri=(workdir / "results/mlruns").as_uri())
    experiment = client.get_experiment_by_name("tunemake")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "demo" and run.data.tags["tunemake.run"] == "demo"
    assert run.data.params["train.max_steps"] == "200" and run.data.params["train.method"] == "lora"
    for key, folder in (("data", "data"), ("model", "models"), ("tokens", "tokens"), ("train", "work/train")):
        assert (workdir / "results" / folder / run.data.tags[f"tunemake.key.{key}"]).is_dir(), key
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert_curve([(m.step, m.value) for m in history], losses)
    assert run.data.metrics["eval/tuned/exact_match"] == pytest.approx(tuned)
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report.json", "model_card.md", "loss.png", "metrics.png", "summary.md"} <= artifacts


def wandb_records(workdir: Path) -> list[dict]:
    """The offline run's .wandb log, read by wandb's own reader (`wandb leet inspect --json`)."""
    (log,) = (workdir / RUN / "track/wandb").glob("offline-run-*/run-*.wandb")
    wandb = Path(sys.executable).with_name("wandb")
    proc = subprocess.run(
        [str(wandb), "leet", "inspect", str(log), "--json"], capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_wandb_offline_run_files_hold_spec_keys_curves_and_files(tracked):
    workdir = tracked[0]
    losses, tuned, _ = demo_facts(workdir)
    records = wandb_records(workdir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["display_name"] == "demo" and run["run_id"].startswith("tm-")
    assert run["config"]["update"]["train.max_steps"] == 200
    assert read_json(workdir / RUN / "track/wandb.manifest.json")["details"]["mode"] == "offline"
    assert "run:demo" in run["tags"] and any(t.startswith("train:") for t in run["tags"])
    history = [r["history"] for r in records if r["type"] == "history"]
    curve = [(h["step"]["num"], h["item"]["train/loss"]) for h in history if "train/loss" in h["item"]]
    assert_curve(curve, losses)
    summary = {}
    for record in records:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    assert summary["eval/tuned/exact_match"] == pytest.approx(tuned)
    files = {f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]}
    assert {"report.json", "model_card.md", "loss.png"} <= files


@pytest.mark.slow
def test_a_rerun_replaces_each_tracker_run_and_switching_off_reruns_nothing(tracked):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    workdir = tracked[0]
    again = snakemake(workdir, "export", "--config", ALL)
    assert not jobs_run(again)  # up to date: trackers on, nothing to log
    forced = snakemake(workdir, "export", "--config", ALL, "--forcerun", "track_run")
    assert jobs_run(forced)["track_run"] == 3 and not set(jobs_run(forced)) & EXPENSIVE
    client = MlflowClient(tracking_uri=(workdir / "results/mlruns").as_uri())
    experiment_id = client.get_experiment_by_name("tunemake").experiment_id
    assert len(client.search_runs([experiment_id])) == 1
    assert len(client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)) == 1
    assert len(list((workdir / RUN / "track/wandb").glob("offline-run-*"))) == 1
    assert len(list((workdir / RUN / "track/tensorboard").glob("events.*"))) == 1
    off = snakemake(workdir, "export")
    assert not jobs_run(off)


@pytest.mark.slow
def test_a_profile_chooses_trackers_and_a_bad_name_fails_before_any_job(tracked, tmp_path):
    workdir = tracked[0]
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text("config:\n  - trackers=tensorboard\n")
    dry = snakemake(workdir, "-n", "export", "--profile", str(profile), "--forcerun", "track_run")
    output = dry.stdout + dry.stderr
    assert "track/tensorboard.manifest.json" in output and "track/mlflow.manifest.json" not in output
    (profile / "config.yaml").write_text("config:\n  - trackers=tensorbord\n")
    bad = snakemake(workdir, "-n", "export", "--profile", str(profile), check=False)
    assert bad.returncode != 0
    message = "unknown tracker 'tensorbord' in config trackers: did you mean 'tensorboard'?"
    assert message in bad.stdout + bad.stderr
