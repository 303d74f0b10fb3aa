"""Run the real workflow in a temporary copy (never the repo's own results/)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = (
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "specs",
    "examples",
    "data",
    "tasks",
    "environment.yml",
    "report",
)
_JOB_LINE = re.compile(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", re.MULTILINE)


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 900, check: bool = True):
    """Run snakemake in `workdir` with this interpreter's environment; returns the process."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "-k", "30", str(timeout), sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


HOLD_RULE = """

rule hold:
    output:
        "results/hold.txt",
    shell:
        "touch {output}; sleep 300"
"""


@contextmanager
def another_run_holding(workdir: Path):
    """A first snakemake run with a job in flight in `workdir` (a rule `hold` added to this copy
    only: its output exists and is marked incomplete, like any job's half-written output); yields
    its Popen, and kills it (-9, its job too: no cleanup) at the end."""
    with open(workdir / "Snakefile", "a") as snakefile:
        snakefile.write(HOLD_RULE)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    first = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/hold.txt"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill below takes the job too
    )
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "results/hold.txt").exists():  # its job started (after onstart)
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start its job"
            time.sleep(0.2)
        yield first
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def jobs_run(proc) -> Counter:
    """Rules of the jobs a real (not dry) snakemake run executed, with counts."""
    return Counter(_JOB_LINE.findall(proc.stdout + proc.stderr))


@pytest.fixture
def workflow(tmp_path) -> Path:
    return copy_workflow(tmp_path / "wf")


def shared_build(tmp_path_factory, name: str, *args: str, start: Path | None = None, prepare=None) -> Path:
    """A copy of the workflow (or of the shared build `start`), changed by `prepare(workdir)` if
    given, where `snakemake <args>` ran once per test session, its terminal output kept beside it
    (build_jobs). Under pytest-xdist the
    workers share one build: the first to need it builds it under a file lock, the others wait
    and reuse it. Tests never change it: they copy it (copy_built) before they change anything."""

    def build(workdir: Path) -> None:
        copy_built(start, workdir) if start else copy_workflow(workdir)
        if prepare:
            prepare(workdir)
        keep_terminal(workdir, snakemake(workdir, *args, timeout=2400))

    if "PYTEST_XDIST_WORKER" not in os.environ:
        workdir = tmp_path_factory.mktemp(name) / "wf"
        build(workdir)
        return workdir
    workdir = tmp_path_factory.getbasetemp().parent / name  # shared by the workers
    done = workdir.with_name(f"{name}.done")
    with open(workdir.with_name(f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a build that failed on another worker
            build(workdir)
            done.touch()
    return workdir


def make_target_args(target: str) -> list[str]:
    """The snakemake arguments of a Makefile target (what the README says to run), without the
    cores (tests pass their own)."""
    lines = (REPO / "Makefile").read_text().split(f"{target}: venv\n", 1)[1].splitlines()
    command = lines[0].strip().split()
    assert command[0] == "$(BIN)/snakemake", command
    return [arg for arg in command[1:] if arg not in ("--cores", "$(CORES)")]


def copy_built(build: Path, dest: Path) -> Path:
    """A private copy of a shared build (results, Snakemake's metadata and file times), so a test
    that edits specs or reruns steps changes nothing another test sees."""
    shutil.copytree(build, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> Path:
    """The demo built once per test session, untouched: the reference other runs are compared
    with, and the start of the tests that build on the demo (they copy it with copy_built)."""
    return shared_build(tmp_path_factory, "demo_reference", "export")


SFT_EARLY = "examples/grpo/sft_early.yaml"


@pytest.fixture(scope="session")
def sft_early_build(tmp_path_factory) -> Path:
    """The GRPO demo's start model (examples/grpo/sft_early.yaml: the demo speller stopped early),
    trained and evaluated once per test session: the SFT parent of both GRPO modules
    (tests/test_grpo.py, tests/test_grpo_demo.py), which copy it."""
    return shared_build(tmp_path_factory, "sft_early", "evaluate", "--config", f"specs={SFT_EARLY}")


@pytest.fixture(scope="session")
def dpo_demo_build(demo_build, tmp_path_factory) -> Path:
    """`make demo-dpo` on a copy of the demo build, once per test session: the demo's SFT run
    came built, so the target's command trains only examples/dpo_style.yaml's DPO run on top of
    it. The DPO run that tests/test_preference_demo.py and tests/test_preference_eval.py read."""
    return shared_build(tmp_path_factory, "dpo_demo", *make_target_args("demo-dpo"), start=demo_build)


def terminal_file(workdir: Path) -> Path:
    """Where a build's terminal output (snakemake's stdout + stderr) is kept: beside its folder,
    so that tests copying the folder do not copy it."""
    return workdir.with_name(workdir.name + ".terminal.txt")


def keep_terminal(workdir: Path, proc) -> None:
    terminal_file(workdir).write_text(proc.stdout + proc.stderr)


def demo_terminal(demo_build: Path) -> str:
    """What `snakemake export` printed on the terminal while it built `demo_build`."""
    return terminal_file(demo_build).read_text()


def build_jobs(workdir: Path) -> Counter:
    """The rules of the jobs the snakemake run that made a shared build executed, with counts."""
    return Counter(_JOB_LINE.findall(terminal_file(workdir).read_text()))


# Artifacts that must be byte-identical between two builds of the same spec on one machine.
REPRODUCIBLE = (
    "results/data/*/raw/*.jsonl",
    "results/tokens/*/*.parquet",
    "results/models/*/model/*.safetensors",
    "results/models/*/model/tokenizer.json",
    "results/runs/*/train/model/*.safetensors",
    "results/runs/*/merged/*.safetensors",
    "results/runs/*/export/*.safetensors",
    "results/runs/*/evaluate/predictions.jsonl",
)


def reproducible_files(workdir: Path) -> dict[str, bytes]:
    files = {}
    for pattern in REPRODUCIBLE:
        for path in sorted(workdir.glob(pattern)):
            files[str(path.relative_to(workdir))] = path.read_bytes()
    return files


def kill_at_first_checkpoint(workdir: Path, target: str, work: Path) -> int:
    """Start `snakemake <target>` in `workdir`, kill -9 it (its jobs too) as soon as the train work
    folder `work` holds a complete checkpoint, and unlock; returns that checkpoint's step."""
    from scripts.training.checkpoints import newest_complete, step_of

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", target]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found, _ = newest_complete(work) if work.exists() else (None, [])
            if found:
                return step_of(found)
            time.sleep(0.05)
        raise AssertionError("training ended or timed out before its first checkpoint")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        snakemake(workdir, "--unlock")
