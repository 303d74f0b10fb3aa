"""Write one tarball someone else can rebuild and verify: the workflow code, the locked specs,
their local data sources, the lock file, the pinned requirements and a README with the two
commands.

    python -m scripts.archive --lock tunemake.lock --out tunemake-archive.tar.gz

Run by `snakemake archive`. The tarball is deterministic (sorted members, zero times and
owners), so the same build gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
from pathlib import Path

from scripts.common.cli import fail
from scripts.common.files import atomic_write_bytes
from scripts.publish.lock_checks import LockError, load
from scripts.publish.lockfile import files_under

PREFIX = "tunemake-archive"
# The workflow code and what sets up its environment (not tests, benches, CI or docs).
PARTS = (
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "report",
    "profiles",
    "tasks",
    "Makefile",
    "requirements.txt",
    "environment.yml",
    "pyproject.toml",
)
README = """# A tunemake build, archived

`tunemake.lock` lists the sha256 of every file every step of these runs produced
({runs}), with the software, device and code that produced them. Two commands, on a machine
with Python 3.11:

    make verify   # sets up .venv (pinned), rebuilds everything in a clean copy, compares with tunemake.lock
    make export   # builds the same results here, under results/

`make verify VERIFY_UNTIL=tokenize_shard` checks the data steps only (minutes instead of the
whole training). A mismatch names the first step whose files differ and what differs in its
provenance (package versions, device, code). The lock was written on: {device}, python
{python}, torch {torch}.
"""


def members(root: Path, lock: dict) -> list[str]:
    files = [p.relative_to(root).as_posix() for p in files_under(root, PARTS)]
    files += [run["spec"] for run in lock["runs"].values()] + list(lock["sources"])
    return sorted(set(files))


def add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(f"{PREFIX}/{name}")
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def archive_bytes(root: Path, lock_path: Path) -> bytes:
    lock = load(lock_path, root)  # every path checked before anything is packed
    lock_text = lock_path.read_text()
    env = lock["environment"]
    readme = README.format(
        runs=", ".join(sorted(lock["runs"])),
        device=env["device"].get("type", "unknown"),
        python=env["python"],
        torch=env["packages"].get("torch", "unknown"),
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "README.md", readme.encode())
        add(tar, "tunemake.lock", lock_text.encode())
        for name in members(root, lock):
            path = root / name
            add(tar, name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
    return gzip.compress(buffer.getvalue(), mtime=0)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lock", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        data = archive_bytes(Path("."), Path(args.lock))
    except LockError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot archive with {args.lock}: {exc}")
    atomic_write_bytes(args.out, data)
    print(f"{args.out}: {len(data)} bytes; unpack it and run `make verify` there")


if __name__ == "__main__":
    main()
