"""lm-evaluation-harness benchmarks as content-keyed targets (spec key `evaluate.benchmarks`).

A score is keyed by what determines it: the model's content key (the base's, or what the merged
model is built from), the task (a harness task name and the harness version, or a task YAML in
the workflow folder: its text, its data files' and its Python files' sha256), the settings and
the threads. Runs that share a base share its scores; an edit to one task reruns that task's
scores only. Import-light (stdlib + yaml): the Snakefile imports this at DAG-build time.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

LOCAL_SUFFIXES = (".yaml", ".yml")
HARNESS = "lm_eval"


def harness_version() -> str | None:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def is_local(task: str) -> bool:
    """A path to a task YAML (in the workflow folder) rather than a harness task name."""
    return task.endswith(LOCAL_SUFFIXES) or "/" in task


class _TaskLoader(yaml.SafeLoader):
    """Reads harness task YAML: `!function utils.process_docs` becomes its text."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def read_task_yaml(path: str | Path) -> dict:
    value = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_TaskLoader)
    if not isinstance(value, dict):
        raise ValueError("not a mapping of task keys")
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_data_files(config: dict) -> list[str]:
    """The local data files a task YAML names in dataset_kwargs.data_files (str, list or dict)."""
    files = (config.get("dataset_kwargs") or {}).get("data_files") or []
    if isinstance(files, dict):
        files = [f for v in files.values() for f in (v if isinstance(v, list) else [v])]
    return [files] if isinstance(files, str) else [str(f) for f in files]


def _inside(path: str) -> bool:
    return not (Path(path).is_absolute() or ".." in Path(path).parts)


def local_task_errors(index: int, task: str) -> list[str]:
    """A task YAML that is missing, unreadable, unnamed, or names data files that are not there."""
    key = f"evaluate.benchmarks[{index}].task"
    if not _inside(task):
        return [f"{key}: {task!r} must be a relative path inside the workflow folder (copy the task there)"]
    path = Path(task)
    if not path.is_file():
        near = sorted(str(p) for p in path.parent.glob("*.y*ml")) if path.parent.is_dir() else []
        return [
            f"{key}: task file {task!r} not found (relative to the workflow folder, {Path.cwd()}); "
            + (
                f"task files there: {', '.join(near)}"
                if near
                else "write a task YAML (docs/evaluation.md: Harness benchmarks)"
            )
            + ", or give a harness task name such as hellaswag"
        ]
    try:
        config = read_task_yaml(path)
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
        return [f"{key}: {task} is not a harness task YAML: {str(exc).splitlines()[0]}"]
    errors = []
    if not isinstance(config.get("task"), str):
        errors.append(f"{key}: {task} has no `task: <name>` line; the harness finds the task by it")
    for file in task_data_files(config):
        if not _inside(file) or not Path(file).is_file():
            errors.append(
                f"{key}: {task} names data file {file!r} (dataset_kwargs.data_files), which is not "
                "there; data file paths are relative to the workflow folder and must stay inside it"
            )
    return errors


def task_identity(task: str) -> dict:
    """What a task's scores depend on besides the model and the settings."""
    if not is_local(task):
        return {"harness_task": task}
    path = Path(task)
    config = read_task_yaml(path)
    code = sorted(path.parent.glob("*.py"))
    return {
        "file": task,
        "name": config["task"],
        "sha256": _sha256(path),
        "data_sha256": {f: _sha256(Path(f)) for f in task_data_files(config)},
        "code_sha256": {str(p): _sha256(p) for p in code},
    }


def task_name(task: str) -> str:
    """The name the harness reports the task under."""
    return read_task_yaml(task)["task"] if is_local(task) else task


def score_slice(entry: dict, model: dict, threads: int) -> dict:
    """Everything one score target depends on: the JSON its job reads, and its key's input."""
    return {
        "task": entry["task"],
        "identity": task_identity(entry["task"]),
        "settings": {k: v for k, v in entry.items() if k != "task"},
        "model": model,
        "threads": threads,
        "harness": harness_version(),
    }


def _scan_names(root: Path) -> set[str]:
    """Task, group and tag names written in the harness's YAML files (fast, not complete)."""
    names = set()
    for path in root.rglob("*.yaml"):
        for match in re.finditer(
            r"^(?:task|group|tag):[ \t]*(\S.*)$", path.read_text(errors="replace"), re.M
        ):
            names.add(match.group(1).strip().strip("'\""))
    return names


def _all_names() -> set[str]:
    """Every name the harness's TaskManager knows (slow: ~10 s), in a child process."""
    code = "import json; from lm_eval.tasks import TaskManager; print(json.dumps(sorted(TaskManager().all_tasks)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return set(json.loads(out.stdout)) if out.returncode == 0 else set()


def unknown_harness_tasks(entries: list[tuple[str, int, str]]) -> list[str]:
    """Messages for the (spec file, index, task) entries whose harness task name the installed
    harness does not have, with a did-you-mean; task YAML paths are checked at spec load."""
    named = [(f, i, t) for f, i, t in entries if not is_local(t)]
    if not named:
        return []
    spec = importlib.util.find_spec(HARNESS)
    if spec is None:
        return [
            f"{named[0][0]}: evaluate.benchmarks[{named[0][1]}].task: {named[0][2]!r} needs "
            "lm-evaluation-harness; install it with `pip install -r requirements.txt` (lm-eval is pinned there)"
        ]
    known = _scan_names(Path(spec.origin).parent / "tasks")
    if any(t not in known for _, _, t in named):
        known |= _all_names()
    return [
        f"{file}: evaluate.benchmarks[{index}].task: unknown harness task {task!r} (lm-eval "
        f"{harness_version()})"
        + (
            f"; did you mean {close[0]!r}?"
            if (close := difflib.get_close_matches(task, known, 1, 0.75))
            else ""
        )
        + " List them with `lm-eval ls tasks`, or give a task YAML path (docs/evaluation.md: Harness benchmarks)."
        for file, index, task in named
        if task not in known
    ]


def benchmark_errors(evaluate: dict) -> list[str]:
    """Spec-load checks of evaluate.benchmarks: no task twice, local task files complete."""
    errors, seen = [], set()
    for index, entry in enumerate(evaluate.get("benchmarks") or []):
        task = entry["task"]
        if task in seen:
            errors.append(f"evaluate.benchmarks[{index}].task: {task!r} is listed twice; remove one")
        seen.add(task)
        if is_local(task):
            errors += local_task_errors(index, task)
    return errors
