"""Progress lines on the terminal where Snakemake runs, for the long steps (train, evaluate).

A step's rule redirects the script's stdout and stderr into logs/, so Snakemake's terminal would
show only job banners while a model trains. The long steps' rules therefore also hand the script
the terminal as file descriptor 3, duplicated before the redirections:

    python -m scripts.train_model ... --progress 3 3>&2 >{log:q} 2>&1

and the script writes one line every few seconds (TUNEMAKE_PROGRESS_SECONDS, default 5) both to
stderr (so the log keeps the full record) and to that descriptor:

    demo: train step 40/200 loss 1.2300 412 tok/s ETA 0:35
    demo: evaluate tuned: generated 256/400 ETA 0:04

Nothing is parsed or piped: the script's exit status is the job's, as before. Under
`--executor slurm` a job's stderr, and so descriptor 3, is the job's SLURM log file (Snakemake
prints its path when it submits the job: `tail -f` it). torchrun starts its workers with only
0-2 open, so the launcher hands them the descriptor as a path, /proc/<launcher pid>/fd/3 (the
launcher execs torchrun, which keeps that pid and the descriptor); where that cannot be opened
the lines go to the log only. Run alone without --progress, a script writes them to stderr.
"""

from __future__ import annotations

import os
import sys
import time

INTERVAL_S = float(os.environ.get("TUNEMAKE_PROGRESS_SECONDS", "5"))


def open_target(target: str | None):
    """The terminal stream named by --progress (a descriptor number or a path), or None."""
    if not target:
        return None
    try:
        if target.isdigit():
            os.fstat(int(target))  # raises when the rule did not open it
            return os.fdopen(int(target), "w", buffering=1, closefd=False)
        return open(target, "a", buffering=1, encoding="utf-8")
    except OSError:
        return None


def worker_target(target: str | None) -> str | None:
    """--progress for processes that torchrun starts: the descriptor of this process (which
    execs torchrun, keeping its pid) as a /proc path, since torchrun closes descriptors above 2."""
    if target and target.isdigit() and os.path.isdir(f"/proc/{os.getpid()}/fd"):
        return f"/proc/{os.getpid()}/fd/{target}"
    return target


def clock_text(seconds: float) -> str:
    """0:35, 12:05, 1:02:09."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Writes `<label>: <text>` to stderr and the terminal stream, at most one line every
    `interval` seconds unless forced."""

    def __init__(self, label: str, target: str | None = None, interval: float = INTERVAL_S):
        self.label, self.interval = label, interval
        self.terminal = open_target(target)
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval

    def line(self, text: str, force: bool = False) -> None:
        if not (force or self.due()):
            return
        self.last = time.monotonic()
        message = f"{self.label}: {text}\n"
        for stream in (sys.stderr, self.terminal):
            if stream is not None:
                try:
                    stream.write(message)
                    stream.flush()
                except OSError:  # a closed terminal never fails the step
                    pass


def eta(started: float, done: int, total: int) -> str:
    if done <= 0:
        return "?"
    return clock_text((time.monotonic() - started) / done * (total - done))


def batch_reporter(progress: Progress | None, what: str, total: int):
    """A callback(done) for a loop over `total` items: `<what> <done>/<total> ETA m:ss`."""
    started = time.monotonic()

    def report(done: int) -> None:
        if progress is None:
            return
        if done < total:
            progress.line(f"{what} {done}/{total} ETA {eta(started, done, total)}")
        else:
            progress.line(f"{what} {done}/{total} in {clock_text(time.monotonic() - started)}", force=True)

    return report


def train_progress_callback(progress: Progress):
    """A TrainerCallback: step/total, the last logged loss (and validation loss), tokens/s and
    the ETA of this process's steps, every few seconds, at the first logged loss and at the end.
    The last step's line is written once, at the end of training (with the final loss), and a
    line is never repeated for the same step, loss and validation loss."""
    from transformers import TrainerCallback

    class TerminalProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = (time.monotonic(), state.global_step, state.num_input_tokens_seen)
            self.loss = self.eval_loss = self.written = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            first = self.loss is None and "loss" in logs
            if "loss" in logs:
                self.loss = float(logs["loss"])
            if "eval_loss" in logs:
                self.eval_loss = float(logs["eval_loss"])
            self.report(state, force=first or "eval_loss" in logs)

        def on_step_end(self, args, state, control, **kwargs):
            self.report(state)

        def on_train_end(self, args, state, control, **kwargs):
            self.report(state, force=True, end=True)

        def report(self, state, force=False, end=False):
            if not state.is_world_process_zero or not (force or progress.due()):
                return
            if state.global_step >= state.max_steps and not end:
                return  # the last step's line comes at the end, with its final loss
            seen = (state.global_step, self.loss, self.eval_loss)
            if seen == self.written:
                return
            self.written = seen
            started, step0, tokens0 = self.begin
            elapsed, steps = time.monotonic() - started, state.global_step - step0
            parts = [f"train step {state.global_step}/{state.max_steps}"]
            if self.loss is not None:
                parts.append(f"loss {self.loss:.4f}")
            if self.eval_loss is not None:
                parts.append(f"eval_loss {self.eval_loss:.4f}")
            tokens = state.num_input_tokens_seen - tokens0
            if tokens > 0 and elapsed > 0:
                parts.append(f"{tokens / elapsed:.0f} tok/s")
            if state.global_step < state.max_steps:
                parts.append(f"ETA {eta(started, steps, state.max_steps - step0)}")
            else:
                parts.append(f"done in {clock_text(elapsed)}")
            progress.line(" ".join(parts), force=True)

    return TerminalProgress()


def worker_args(argv: list[str], target: str | None) -> list[str]:
    """`argv` with its --progress value replaced by worker_target(target)."""
    out, replace = [], worker_target(target)
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--progress":
            out.append(replace or arg)
        elif arg.startswith("--progress="):
            out.append(f"--progress={replace or arg.split('=', 1)[1]}")
        else:
            out.append(arg)
    return out
