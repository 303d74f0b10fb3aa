"""File helpers: atomic writes (nothing half-written ever looks complete), hashing, JSONL."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _stamp(path: str | Path) -> tuple:
    """What identifies one version of a file within a run: real path, size, mtime and inode."""
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


# Per open hashes_remembered block: sha256 of the files read_and_hash read, by _stamp.
_RUNS: list[dict[tuple, str]] = []


@contextmanager
def hashes_remembered():
    """Within the block (one step's run), sha256_file answers for the files read_and_hash read
    while they are unchanged, so a source is read and hashed once."""
    _RUNS.append({})
    try:
        yield
    finally:
        _RUNS.pop()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    known = _RUNS[-1].get(_stamp(path)) if _RUNS and _RUNS[-1] else None
    if known:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_and_hash(path: str | Path, work: Callable[[bytes], T]) -> T:
    """`work(bytes of the file)`; within hashes_remembered, the file's sha256 is computed
    alongside (in a thread: hashlib releases the GIL) for sha256_file to answer from."""
    stamp = _stamp(path)
    data = Path(path).read_bytes()
    if not _RUNS:
        return work(data)
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(lambda: hashlib.sha256(data).hexdigest())
        result = work(data)
    if _stamp(path) == stamp:
        _RUNS[-1][stamp] = digest.result()
    return result


def fault_point(name: str) -> None:
    """Fault injection for the reliability tests: SIGKILL this process at a named point.

    TUNEMAKE_FAULT=<script module>:<point>[:<n>] (e.g. `scripts.tokenize_shard:manifest` or
    `scripts.train_model:write:2`) kills the process running that script the n-th time (default 1st)
    it reaches the point; unset, it costs nothing.
    """
    wanted = os.environ.get("TUNEMAKE_FAULT")
    if not wanted:
        return
    import signal
    import sys

    module_name, point, *nth = wanted.split(":") + [""] * (wanted.count(":") < 1)
    module = getattr(sys.modules.get("__main__"), "__spec__", None)
    if not module or module.name != module_name or point != name:
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] == int(nth[0] if nth and nth[0] else 1):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`. The file
    gets the mode a plain open() would give it (0o666 less the umask: 0644 under umask 022),
    not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point("write")  # killed here: a temporary file exists, the real name does not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


_JSONL_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode  # json.dumps's bytes, one encoder


def jsonl_text(records) -> str:
    return "".join(_JSONL_ENCODE(r) + "\n" for r in records)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path: str | Path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def describe_outputs(paths) -> list[dict]:
    """Path, size and sha256 of each file (folders expand to their files, sorted)."""
    files = []
    for path in map(Path, paths):
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            files.append({"path": str(member), "bytes": member.stat().st_size, "sha256": sha256_file(member)})
    return files
