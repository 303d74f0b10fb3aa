"""Which snakemake runs work in this folder, and the messages that name them (included by the
Snakefile after common.smk; its onstart/onsuccess/onerror call register_run and release_run).
"""

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

# Another run in this folder. A run that starts jobs registers in .snakemake/tunemake/runs/
# (the Snakefile's onstart) and holds an flock on its file until it ends; the kernel drops the
# flock when the process dies, even by kill -9. When Snakemake refuses a run over a lock or
# "incomplete" files while a registered run is alive, the message says so, instead of advising
# --rerun-incomplete or --unlock, which would break that run. With no live run (a stale lock
# after a crash), Snakemake's own message stands.
RUNS_DIR = Path(".snakemake/tunemake/runs")
_OWN_RUN = []


def _own_run_file():
    return RUNS_DIR / f"{socket.gethostname()}-{os.getpid()}.json"


def _flock_free(path, kind):
    """Whether `path` can be flocked (LOCK_SH: no live owner; LOCK_EX: nobody holds it)."""
    with open(path) as handle:
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def live_runs():
    """The registered runs of other processes that are still alive."""
    live = []
    for path in sorted(RUNS_DIR.glob("*.json")):
        try:
            if path != _own_run_file() and not _flock_free(path, fcntl.LOCK_SH):
                live.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # gone meanwhile
            continue
    return live


def register_run():
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    for path in RUNS_DIR.glob("*.json"):  # files of runs that died
        try:
            if _flock_free(path, fcntl.LOCK_EX):
                path.unlink(missing_ok=True)
        except OSError:
            continue
    temporary = _own_run_file().with_suffix(".tmp")
    handle = open(temporary, "w")
    # locked before it is visible: a visible file is locked (alive) or stale
    fcntl.flock(handle, fcntl.LOCK_EX)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    json.dump(run | {"command": " ".join(sys.argv)}, handle)
    handle.flush()
    temporary.replace(_own_run_file())
    _OWN_RUN.append(handle)


def release_run():
    while _OWN_RUN:
        _own_run_file().unlink(missing_ok=True)
        _OWN_RUN.pop().close()


def another_run_message(runs):
    run = runs[0]
    return (
        f"another snakemake run is working in this folder: pid {run['pid']} on {run['host']}, "
        f"started {run['started']}: {run['command']}\n"
        "Wait for it to finish (or stop it), then run again. The lock is its lock and the files "
        "Snakemake would call incomplete are its jobs in progress: do not use --unlock or "
        "--rerun-incomplete while it runs."
    )


_REFUSALS = []  # messages of refusals raised in input functions, for _Refusals


class _Refusals(logging.Filter):
    """Rewrites Snakemake's lock and incomplete-files refusals while another run is alive, and
    shows a refusal raised in an input function as its message alone (Snakemake would add the
    input function's wildcards and a "Traceback:" of rules/common.smk)."""

    tunemake = True
    refusals = ("LockException", "IncompleteFilesException")

    def filter(self, record):
        exception = getattr(record, "exception", None)
        if exception in self.refusals:
            runs = live_runs()
            if runs:
                record.msg, record.args = another_run_message(runs), ()
        elif exception == "InputFunctionException" and _REFUSALS:
            if _REFUSALS[-1] in str(record.msg):
                record.msg, record.args = _REFUSALS[-1], ()
        return True


_SNAKEMAKE_LOG = logging.getLogger("snakemake.logging")
if not any(getattr(f, "tunemake", False) for f in _SNAKEMAKE_LOG.filters):
    _SNAKEMAKE_LOG.addFilter(_Refusals())
