"""What every step's command line shares: JSON arguments given inline or by file, and ending
with a one-paragraph error for the user."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def json_arg(value: str):
    """A JSON argument, inline or, as `@path`, in a file: the rules pass spec slices as files
    (results/slices/<sha256>.json), so no spec size reaches the command-line length limit."""
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read the JSON argument file {value[1:]}: {exc.strerror}")
    return json.loads(value)


def path_list(values: list[str]) -> list[str]:
    """Paths given one by one or, as `@path`, in a JSON list file: the rules pass the token
    shards by file (up to 4096 of them would pass the shell's 128 KB command limit)."""
    paths = []
    for value in values:
        paths += json_arg(value) if value.startswith("@") else [value]
    return paths


def fail(message: str, code: int = 2):
    """End a script with a one-paragraph error for the user (no traceback).

    Rules send stderr to the step's log; the workflow profile profiles/default
    (show-failed-logs) prints a failed job's log, so this paragraph reaches the terminal.
    """
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
