"""Progress where the user looks: `snakemake export` shows the train step's progress (step/total,
loss, tokens/s, ETA) and the evaluation's generations on its own terminal, while the step's log
under logs/ keeps the full record (scripts/common/progress.py, the `--progress 3 3>&2` of the
train_model and evaluate_model rules)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from scripts.common.progress import Progress, clock_text, open_target, worker_args
from tests.workflow_fixtures import REPO, demo_terminal

TRAIN_LINE = re.compile(
    r"^demo: train step (\d+)/200 loss (\d+\.\d+) (?:\d+ tok/s )?(?:ETA \d+:\d\d|done in \d+:\d\d)$",
    re.MULTILINE,
)
EVALUATE_LINE = re.compile(r"^demo: evaluate (tuned|base): generated (\d+)/(\d+) ", re.MULTILINE)


@pytest.mark.slow
def test_the_demo_export_shows_training_progress_on_the_terminal(demo_build):
    """The session's demo build (tests/workflow_fixtures.py keeps what snakemake printed):
    training lines with step and loss while it trains, the last at step 200, and the same lines
    in the train step's log."""
    terminal = demo_terminal(demo_build)
    steps = [(int(step), float(loss)) for step, loss in TRAIN_LINE.findall(terminal)]
    assert len(steps) >= 2, terminal[-3000:]
    assert steps[0][0] < 200 and steps[-1][0] == 200, steps
    assert [s for s, _ in steps] == sorted(s for s, _ in steps)
    assert steps[-1][1] < steps[0][1], steps  # the loss fell (the demo learns)
    assert re.search(r"^demo: train step 200/200 loss \S+ \d+ tok/s done in ", terminal, re.MULTILINE)
    generated = {name: (int(done), int(total)) for name, done, total in EVALUATE_LINE.findall(terminal)}
    assert generated["tuned"][0] == generated["tuned"][1] > 0 and generated["base"] == generated["tuned"]
    log = (demo_build / "logs/runs/demo/train_model.log").read_text()
    assert TRAIN_LINE.findall(log) == TRAIN_LINE.findall(terminal)  # the log keeps them too
    assert "trained 200 steps" in log and "trained 200 steps" not in terminal  # the rest stays there
    assert "\r" not in log  # lines, not a bar redrawn in place


def test_progress_lines_go_to_stderr_and_the_descriptor_the_rule_passes(tmp_path):
    """The rule's `--progress 3 3>&2 >log 2>&1` in a shell as Snakemake runs it: the line lands
    on the shell's stderr and in the log; a failing script still fails the command."""
    code = (
        "from scripts.common.progress import Progress\n"
        "import sys\n"
        "Progress('demo', sys.argv[1]).line('train step 1/2 loss 1.0000', force=True)\n"
        "raise SystemExit(int(sys.argv[2]))\n"
    )
    for status in (0, 3):
        log = tmp_path / f"{status}.log"
        proc = subprocess.run(
            [
                "bash",
                "-c",
                f'set -euo pipefail; {sys.executable} -c "$0" 3 {status} 3>&2 >{log} 2>&1; echo after',
                code,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.stderr == "demo: train step 1/2 loss 1.0000\n"
        assert log.read_text() == "demo: train step 1/2 loss 1.0000\n"
        assert proc.returncode == status and (proc.stdout == "after\n") == (status == 0)


def test_a_script_run_alone_writes_progress_to_stderr_only(capsys):
    """Without --progress, or with a descriptor nobody opened, the lines go to stderr (the log)."""
    unused = 1000
    while True:
        try:
            os.fstat(unused)
            unused += 1
        except OSError:
            break
    for target in (None, str(unused)):
        progress = Progress("demo", target, interval=3600)
        assert progress.terminal is None
        progress.line("not yet")  # within the interval: not written
        progress.line("train step 2/2", force=True)
    assert capsys.readouterr().err == "demo: train step 2/2\n" * 2


def test_torchrun_workers_get_the_descriptor_as_a_path():
    """torchrun starts its workers with only descriptors 0-2 open: the launcher (which execs
    torchrun, keeping its pid) hands them /proc/<pid>/fd/3, which reaches the same terminal."""
    argv = ["--spec-json", "{}", "--run", "demo", "--progress", "3", "--nproc", "2"]
    assert worker_args(argv, "3") == [*argv[:5], f"/proc/{os.getpid()}/fd/3", *argv[6:]]
    assert worker_args(["--progress=3"], "3") == [f"--progress=/proc/{os.getpid()}/fd/3"]
    read, write = os.pipe()
    try:
        stream = open_target(f"/proc/{os.getpid()}/fd/{write}")
        stream.write("demo: train step 1/2\n")
        stream.close()
        assert os.read(read, 100) == b"demo: train step 1/2\n"
    finally:
        os.close(read)
        os.close(write)


def test_clock_text():
    assert [clock_text(s) for s in (0, 35, 725, 3729)] == ["0:00", "0:35", "12:05", "1:02:09"]


def test_the_last_training_line_is_written_once(capsys):
    """The end of training: the last step (progress due), its logged loss, the trainer's summary,
    then on_train_end: one line for the last step, with the final loss (issue 30, point 14)."""
    from types import SimpleNamespace

    from scripts.common.progress import train_progress_callback

    callback = train_progress_callback(Progress("demo", interval=0))
    state = SimpleNamespace(global_step=0, max_steps=2, num_input_tokens_seen=0, is_world_process_zero=True)
    callback.on_train_begin(None, state, None)
    state.global_step = 1
    callback.on_log(None, state, None, logs={"loss": 2.0})
    callback.on_step_end(None, state, None)  # the same step, loss: not repeated
    state.global_step = 2
    callback.on_step_end(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 1.5, "eval_loss": 1.75})
    callback.on_log(None, state, None, logs={"train_loss": 1.75, "train_runtime": 1.0})
    callback.on_train_end(None, state, None)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "demo: train step 1/2 loss 2.0000 ETA 0:00"
    assert len(lines) == 2 and re.fullmatch(
        r"demo: train step 2/2 loss 1\.5000 eval_loss 1\.7500 done in 0:00", lines[1]
    )
