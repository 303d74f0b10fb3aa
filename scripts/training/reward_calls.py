"""Limits around each call of a GRPO reward term (user code, or a regex that can backtrack):
a time limit per call, a cap on what the call prints, and a check of the values it returns.
A failure is a RewardError naming the term (its file for a user function) and the record.

The time limit is a SIGALRM timer (signal.setitimer) around the call: TRL calls reward
functions in the training process's main thread, where a signal interrupts Python code, a
sleep and `re` matching alike, at no cost per call (a subprocess per call would pay a fork and
could not pass TRL's log_metric callbacks). Its exception derives from BaseException, so a
user's `except Exception` does not swallow it; it is raised again after the call in any case.
Off the main thread (no signals there) the call runs without a limit.

Output: sys.stdout and sys.stderr are redirected during the call; the first OUTPUT_LIMIT
characters go on to the step's log, the rest is counted and dropped with a note. Code that
writes to the file descriptors itself (os.write, C extensions) is not capped.
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import sys
import threading

# per call of a term (one batch of completions), unless train.grpo.rewards[].timeout_s says: user
# functions and metrics 30 s (ROUGE-L of long completions is slow pure Python; a first call
# imports its package); the regex matches of a regex term or of extract_regex take microseconds
# per completion, so 5 s stops a backtracking pattern soon
DEFAULT_TIMEOUT_S = {"function": 30.0, "metric": 30.0, "regex": 5.0}
OUTPUT_LIMIT = 16 * 1024  # characters a reward call may print into the step's log


class RewardError(ValueError):
    """A reward term that failed, timed out or returned something that is not a reward."""


class RewardTimeout(BaseException):
    """Raised in the reward call by SIGALRM (a BaseException: `except Exception` does not catch it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise RewardTimeout in the block after `seconds` (main thread; elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    expired = []

    def expire(signum, frame):
        expired.append(True)
        raise RewardTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:  # the user's code caught the timeout and went on: it still took too long
        raise RewardTimeout


class CappedOutput(io.TextIOBase):
    """A text stream that keeps its first `limit` characters and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.kept, self.total = limit, [], 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = self.limit - min(self.total, self.limit)
        if room > 0:
            self.kept.append(text[:room])
        self.total += len(text)
        return len(text)


@contextlib.contextmanager
def capped_output(term: str, limit: int = OUTPUT_LIMIT):
    """What the block prints, up to `limit` characters, then on to stderr (the step's log)."""
    stream = CappedOutput(limit)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield stream
    finally:
        text = "".join(stream.kept)
        if text:
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
        if stream.total > limit:
            print(
                f"note: reward term {term!r} printed {stream.total:,} characters in one call; the "
                f"first {limit:,} are kept in this log",
                file=sys.stderr,
            )


def record_label(index: int, prompts, kwargs: dict) -> str:
    """`record <id> (prompt '...')` for the completion at `index` of a reward call."""
    ids = kwargs.get("record_id") or []
    label = f"record {ids[index]}" if index < len(ids) else f"completion {index + 1}"
    if prompts and index < len(prompts):
        prompt = str(prompts[index])
        label += f" (prompt {prompt[:60]!r}{'...' if len(prompt) > 60 else ''})"
    return label


def checked_scores(values, count: int, where: str, prompts, kwargs: dict) -> list[float | None]:
    """The values a term returned as floats (None kept: no reward for that completion), or a
    RewardError: not a list, a wrong length, a value that is not a number, NaN or inf."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise RewardError(
            f"{where} returned {type(values).__name__} {values!r:.80}, not a list of numbers (one per "
            "completion, or None)"
        )
    values = list(values)
    if len(values) != count:
        raise RewardError(
            f"{where} returned {len(values)} values for {count} completions; return one per completion"
        )
    scores = []
    for index, value in enumerate(values):
        if value is None:
            scores.append(None)
            continue
        try:
            number = None if isinstance(value, (str, bytes)) else float(value)
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise RewardError(
                f"{where} returned {type(value).__name__} {value!r:.80} for {record_label(index, prompts, kwargs)}; "
                "a reward is a number (or None: no reward for that completion)"
            )
        if not math.isfinite(number):
            raise RewardError(
                f"{where} returned {value!r} for {record_label(index, prompts, kwargs)}; a reward must be "
                "a finite number (or None: no reward for that completion)"
            )
        scores.append(number)
    return scores


def limited_call(call, where: str, term: str, timeout: float | None, doing):
    """call() under the time limit and the output cap; a timeout or an exception of the call is a
    RewardError naming `where` and `doing()` (what the call was doing when it was stopped: scoring
    a record, loading the rewards file)."""
    try:
        with capped_output(term), time_limit(timeout):
            return call()
    except RewardTimeout:
        raise RewardError(
            f"{where} took more than {timeout:g} s for one call (while {doing()}); make it faster "
            "or raise the term's timeout_s"
        ) from None
    except RewardError:
        raise
    except Exception as exc:
        raise RewardError(f"{where} failed while {doing()}: {type(exc).__name__}: {exc}") from None


def step_reward_error(rows: list[list[float]], names: list[str]) -> str | None:
    """The error of a step none of whose completions got a reward (every term returned None for
    every completion: TRL would train on advantages of 0, i.e. learn nothing), else None.
    `rows`: per completion, each term's value, NaN for None (TRL's rewards_per_func)."""
    if rows and all(all(math.isnan(v) for v in row) for row in rows):
        return (
            f"no reward for any of the {len(rows)} completions of this step: every reward term "
            f"({', '.join(names)}) returned None for each of them, so there is nothing to learn; make "
            "a term return a number for at least some completions"
        )
    return None
