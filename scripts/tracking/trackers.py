"""Experiment trackers (TensorBoard, MLflow, Weights & Biases): a runtime choice, never a spec key.

`--config trackers=tensorboard,mlflow,wandb` (or `trackers:` in a profile) asks the export target
for one `track_run` job per run and tracker, which logs post hoc what the build already wrote:
the spec as parameters, the content keys and the run name as tags, the training curves, the
evaluation metrics and the report files. Nothing here enters a content key, so switching a
tracker on reruns no other step.

The choice itself is checked at DAG-build time (scripts/compiler/tracker_choice.py); the writers
are in scripts/tracking/writers.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import netrc
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MLFLOW_DEFAULT_STORE = "results/mlruns"
WANDB_HOST = "https://api.wandb.ai"
CONNECT_TIMEOUT_S = 5.0  # the reachability check of a remote tracker, before any of its calls
PROJECT = "tunemake"  # MLflow experiment and W&B project unless MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT


@dataclass
class Record:
    """What a tracker logs for one run, read from the files the build wrote."""

    run: str
    track_id: str  # stable for the same run name and content keys: a rerun replaces its run
    params: dict[str, str]
    tags: dict[str, str]
    curves: list[tuple[int, str, float]]  # (step, name, value), in step order
    evaluation: dict[str, float]  # eval/base/<metric>, eval/tuned/<metric>
    final_step: int
    artifacts: list[Path] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # name -> Markdown


def flat_params(spec: dict) -> dict[str, str]:
    """The spec as parameters: dotted keys (list items by index), values as text."""
    out = {}

    def walk(value, prefix):
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(sub, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, list) and value:
            for index, sub in enumerate(value):
                walk(sub, f"{prefix}.{index}")
        else:
            out[prefix] = value if isinstance(value, str) else json.dumps(value)

    walk(spec, "")
    return out


def track_id(run: str, keys: dict) -> str:
    """A run id derived from the run name and its content keys (W&B ids: letters, digits, -)."""
    text = json.dumps({"run": run, "keys": keys}, sort_keys=True)
    return "tm-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def key_tags(run: str, keys: dict, spec_file: str | None = None) -> dict[str, str]:
    tags = {"tunemake.run": run, **{f"tunemake.key.{k}": str(v) for k, v in keys.items()}}
    if spec_file:
        tags["tunemake.spec_file"] = spec_file
    return tags


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def training_curves(entries: list[dict]) -> list[tuple[int, str, float]]:
    """(step, train/<name>, value) for every number of every log.jsonl line, in step order."""
    points = []
    for entry in entries:
        for name, value in sorted(entry.items()):
            if name != "step" and _finite(value):
                points.append((int(entry["step"]), f"train/{name}", float(value)))
    return sorted(points, key=lambda p: p[0])


def evaluation_metrics(report: dict) -> dict[str, float]:
    """eval/<model>/<metric> for every number in the report's metrics (base may be null)."""
    out = {}
    for model, metrics in (report.get("metrics") or {}).items():
        for name, value in (metrics or {}).items():
            if _finite(value):
                out[f"eval/{model}/{name}"] = float(value)
    return out


def build_record(run, spec, keys, log_entries, report, artifacts, spec_file=None, texts=None) -> Record:
    curves = training_curves(log_entries)
    return Record(
        run=run,
        track_id=track_id(run, keys),
        params=flat_params(spec),
        tags=key_tags(run, keys, spec_file),
        curves=curves,
        evaluation=evaluation_metrics(report),
        final_step=max((step for step, _, _ in curves), default=0),
        artifacts=[Path(a) for a in artifacts],
        texts=texts or {},
    )


def without_credentials(uri: str) -> str:
    """A tracking URI fit for a manifest: user and password dropped."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=host))
    return uri


def mlflow_uri(environ=os.environ, store=MLFLOW_DEFAULT_STORE) -> str:
    """MLFLOW_TRACKING_URI from the environment wins; else a local file store under results/."""
    return environ.get("MLFLOW_TRACKING_URI") or Path(store).resolve().as_uri()


def is_file_store(uri: str) -> bool:
    """A local MLflow file store (`file:` URI or plain path; `databricks` alone is not one)."""
    return urlsplit(uri).scheme in ("", "file") and uri != "databricks"


def wandb_mode(environ=os.environ, has_login=None) -> str:
    """WANDB_MODE wins; else online with an API key or a netrc login, offline without."""
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    if environ.get("WANDB_API_KEY"):
        return "online"
    logged_in = has_login() if has_login else netrc_login(environ)
    return "online" if logged_in else "offline"


def netrc_login(environ=os.environ) -> bool:
    """Whether `wandb login` left a key for the W&B host in ~/.netrc (or $NETRC)."""
    host = urlsplit(environ.get("WANDB_BASE_URL", WANDB_HOST)).hostname
    path = environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def remote_address(tracker: str, environ=os.environ, has_login=None) -> str | None:
    """The http(s) address a tracker will talk to (credentials dropped), or None when it writes
    local files: TensorBoard, MLflow's file store or database, W&B offline."""
    if tracker == "mlflow":
        uri = mlflow_uri(environ)
        return without_credentials(uri) if urlsplit(uri).scheme in ("http", "https") else None
    if tracker == "wandb" and wandb_mode(environ, has_login) == "online":
        return without_credentials(environ.get("WANDB_BASE_URL") or WANDB_HOST)
    return None


def unreachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a TCP connection to the address's host and port fails within `timeout` seconds (name
    lookup included: it runs in a thread, waited for `timeout`), or None when it connects."""
    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc) or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"
