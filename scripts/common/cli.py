"""What every step's command line shares: ending with a one-paragraph error for the user."""

from __future__ import annotations

import sys


def fail(message: str, code: int = 2):
    """End a script with a one-paragraph error for the user (no traceback).

    Rules send stderr to the step's log; the workflow profile profiles/default
    (show-failed-logs) prints a failed job's log, so this paragraph reaches the terminal.
    """
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
