"""How the bad-input corpus (tests/test_bad_inputs.py) runs its cases: a step's process with
its wall time and peak resident memory (run_measured), and the child process that loads every
spec case under the memory and time limits (refuse_specs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MEMORY_LIMIT = 2 << 30  # bytes: the spec loader's address space, a step's peak resident memory
TIME_LIMIT = 60  # seconds per case


class Measured(subprocess.CompletedProcess):
    """A finished step process with its wall time and peak resident memory."""

    seconds: float
    peak_bytes: int


def run_measured(cmd: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run `cmd` (output in .stdout, .stderr empty), killed after TIME_LIMIT s; os.wait4 gives
    the child's own peak resident memory (and that of the processes it waited for)."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        killer = threading.Timer(TIME_LIMIT, child.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        result = Measured(cmd, child.returncode, out.read().decode(errors="replace"), "")
    result.seconds = time.perf_counter() - start
    result.peak_bytes = usage.ru_maxrss * 1024  # KiB on Linux
    return result


def refuse_specs(names: list[str], out: str) -> None:
    """Child process: load specs/<name>.yaml for each name under MEMORY_LIMIT and TIME_LIMIT;
    write {name: {outcome, message, seconds}} and the peak resident memory to `out`."""
    import resource
    import traceback

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    def alarm(*_):
        raise TimeoutError(f"not refused within {TIME_LIMIT} s")

    signal.signal(signal.SIGALRM, alarm)
    from scripts.compiler.spec import SpecError, load_specs

    results = {}
    for name in names:
        start = time.perf_counter()
        signal.alarm(TIME_LIMIT)
        try:
            load_specs([f"specs/{name}.yaml"])
            outcome, message = "accepted", ""
        except SpecError as exc:
            outcome, message = "refused", str(exc)
        except BaseException:  # noqa: BLE001 - MemoryError, TimeoutError, a bug: all reported
            outcome, message = "crashed", traceback.format_exc()[-3000:]
        finally:
            signal.alarm(0)
        results[name] = {"outcome": outcome, "message": message, "seconds": time.perf_counter() - start}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    Path(out).write_text(json.dumps({"cases": results, "peak_bytes": peak}))
