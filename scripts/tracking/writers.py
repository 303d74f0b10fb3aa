"""The three tracker writers of the track_run step: each logs one Record (scripts/tracking/trackers.py)
and replaces what an earlier track_run of the same run and content keys logged, so a rerun never
piles up duplicates. Each imports its package only when called.

- TensorBoard: event files in one folder (deleted and rewritten): scalars with their steps, the
  spec as hparams, Markdown as text, PNG plots as images (TensorBoard has no artifact store).
- MLflow: a run in an experiment; the active runs tagged with the same track id are deleted
  first (soft delete, MLflow's own API: `mlflow gc` purges them from a file store).
- W&B: a run whose id is the track id, under <dir>/wandb/ (deleted and rewritten; online, the
  run of that id is deleted through the public API first).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from itertools import groupby
from pathlib import Path

from scripts.tracking.trackers import Record, is_file_store

MLFLOW_PARAM_LIMIT = 6000  # characters of a parameter value MLflow stores
WANDB_TAG_LIMIT = 64


def typed(value: str):
    """A parameter back as a number or boolean where it is one (HParams and W&B sort those)."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (int, float, bool)) else value


def write_tensorboard(record: Record, folder: Path) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(log_dir=str(folder)) as writer:
        for step, name, value in record.curves:
            writer.add_scalar(name, value, step)
        for name, value in record.evaluation.items():
            writer.add_scalar(name, value, record.final_step)
        texts = dict(record.texts)
        for path in record.artifacts:
            if path.suffix == ".md":
                texts[path.stem] = path.read_text(encoding="utf-8")
            elif path.suffix == ".png":
                writer.add_image(f"report/{path.stem}", _rgb(path), record.final_step, dataformats="HWC")
        for name, text in texts.items():
            writer.add_text(name, text, record.final_step)
        # the spec as hyperparameters, against the tuned model's metrics (logged above as scalars)
        values = {k: typed(v) for k, v in record.params.items()}
        tuned = {k: v for k, v in record.evaluation.items() if k.startswith("eval/tuned/")}
        for summary in hparams(values, tuned):
            writer.file_writer.add_summary(summary)
    return {"location": str(folder), "run_id": record.track_id, "files": sorted(folder.rglob("events.*"))}


def _rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def write_mlflow(record: Record, uri: str, experiment: str) -> dict:
    if is_file_store(uri):
        # MLflow 3 keeps the file store in maintenance mode behind this switch; the user's own
        # setting wins. (A database store: MLFLOW_TRACKING_URI=sqlite:///mlflow.db, needs mlflow.)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, ViewType

    client = MlflowClient(tracking_uri=uri)
    experiment_id = _mlflow_experiment(client, experiment)
    previous = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`tunemake.track_id` = '{record.track_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    for run in previous:
        client.delete_run(run.info.run_id)
    tags = {**record.tags, "tunemake.track_id": record.track_id}
    run_id = client.create_run(experiment_id, run_name=record.run, tags=tags).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(name, value, now, step) for step, name, value in record.curves]
    metrics += [Metric(name, value, now, record.final_step) for name, value in record.evaluation.items()]
    params = [Param(k, v[:MLFLOW_PARAM_LIMIT]) for k, v in record.params.items()]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limits: 1000 metrics, 100 params
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    for path in record.artifacts:
        client.log_artifact(run_id, str(path), "report")
    for name, text in record.texts.items():
        client.log_text(run_id, text, f"{name}.md")
    client.set_terminated(run_id)
    return {"location": uri, "run_id": run_id, "experiment_id": experiment_id, "replaced": len(previous)}


def _mlflow_experiment(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another track_run job created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def write_wandb(record: Record, track_dir: Path, mode: str, project: str) -> dict:
    import wandb

    folder = track_dir / "wandb"
    shutil.rmtree(folder, ignore_errors=True)
    track_dir.mkdir(parents=True, exist_ok=True)
    if mode == "online":
        _delete_wandb_run(wandb, project, record.track_id)
    settings = wandb.Settings(
        console="off", x_disable_stats=True, save_code=False, disable_git=True, x_save_requirements=False
    )
    keys = [
        f"{k.removeprefix('tunemake.key.')}:{v}"
        for k, v in record.tags.items()
        if k.startswith("tunemake.key.")
    ]
    run = wandb.init(
        project=project,
        id=record.track_id,
        name=record.run,
        dir=str(track_dir),
        mode=mode,
        job_type="fine-tune",
        config={k: typed(v) for k, v in record.params.items()},
        tags=[tag[:WANDB_TAG_LIMIT] for tag in [f"run:{record.run}", *keys]],
        settings=settings,
    )
    for step, points in groupby(record.curves, key=lambda p: p[0]):
        run.log({name: value for _, name, value in points}, step=step)
    if record.evaluation:
        run.log(record.evaluation, step=record.final_step)
        run.summary.update(record.evaluation)
    for path in record.artifacts:
        run.save(str(path.resolve()), base_path=str(path.resolve().parent), policy="now")
    run_dir = Path(run.dir).parent
    run.finish()
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and "logs" not in p.parts)
    return {"location": str(run_dir), "run_id": record.track_id, "mode": mode, "files": files}


def _delete_wandb_run(wandb, project: str, run_id: str) -> None:
    """Online: delete the run an earlier track_run logged under this id, so it is replaced."""
    api = wandb.Api()
    try:
        api.run(f"{api.default_entity}/{project}/{run_id}").delete()
    except (wandb.errors.CommError, ValueError):  # no such run yet
        pass
