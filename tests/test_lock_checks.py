"""A lock file read back by `verify` and `archive` (scripts/publish/lock_checks.py) is input like
any other: a path that leaves the workflow folder, broken YAML or JSON, a missing key or a lock
with no steps is refused with one line naming the lock file, the key and the fix, before
anything is copied or packed, and with no traceback. Each test runs the real command line on a
small hand-written lock (no build needed); tests/test_publish.py runs them through snakemake."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workflow_fixtures import REPO

EVIL = "../outside/evil.txt"


def workflow_with_lock(root: Path, edit=None) -> Path:
    """A workflow folder with one spec, one data source and a lock of one shard_data step
    (`edit(lock)` changes it before it is written); returns the lock's path."""
    (root / "specs").mkdir(parents=True)
    (root / "specs/demo.yaml").write_text("name: demo\n")
    (root / "data").mkdir()
    data = b'{"prompt": "Spell 1:", "completion": "one"}\n'
    (root / "data/a.jsonl").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest = "results/data/0123456789ab/raw.manifest.json"
    lock = {
        "lock_version": 1,
        "code": {"sha256": "0" * 64, "git_commit": None},
        "environment": {"python": "3.11.9", "packages": {}, "device": {"type": "cpu"}},
        "sources": {"data/a.jsonl": {"bytes": len(data), "sha256": digest}},
        "runs": {"demo": {"spec": "specs/demo.yaml", "steps": {"shard_data": [manifest]}}},
        "artifacts": {
            manifest: {
                "step": "shard_data",
                "outputs": {"results/data/0123456789ab/raw/a.jsonl": {"bytes": 1, "sha256": "1" * 64}},
            }
        },
    }
    if edit:
        edit(lock)
    path = root / "tunemake.lock"
    path.write_text(yaml.safe_dump(lock) if isinstance(lock, dict) else lock)
    return path


def evil_source(lock: dict, key: str = EVIL, data: bytes = b"evil\n") -> None:
    """A source key the lock should never have, with the sha256 of what it points to (so the
    source check passes and only the path check can refuse it)."""
    lock["sources"][key] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def run(script: str, root: Path, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if tmp:
        env["TMPDIR"] = str(tmp)  # where verify would make its clean copy
    return subprocess.run(
        [sys.executable, "-m", f"scripts.{script}", "--lock", "tunemake.lock", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused(proc, *parts: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    for part in parts:
        assert part in lines[0], output
    return lines[0]


def test_a_source_key_climbing_out_creates_nothing_outside_and_is_refused(tmp_path):
    """The issue's key: verify copied `../outside/evil.txt` from beside the workflow to beside
    its clean copy (outside it) and went on; archive packed it."""
    root, tmp = tmp_path / "wf", tmp_path / "tmp"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/evil.txt").write_bytes(b"evil\n")
    tmp.mkdir()
    workflow_with_lock(root, evil_source)
    line = refused(run("verify", root, "--until", "shard_data", tmp=tmp), "tunemake.lock", repr(EVIL))
    assert "climbs out of the workflow folder with '..'" in line and "snakemake lock --cores 1" in line
    assert list(tmp.iterdir()) == [], "verify made a copy before refusing the lock"
    refused(run("archive", root, "--out", "archive.tar.gz"), "tunemake.lock", repr(EVIL), "'..'")
    assert not (root / "archive.tar.gz").exists()


@pytest.mark.parametrize("script", ["verify", "archive"])
def test_an_absolute_source_key_is_refused(tmp_path, script):
    root = tmp_path / "wf"
    workflow_with_lock(
        root, lambda lock: evil_source(lock, "/etc/hostname", Path("/etc/hostname").read_bytes())
    )
    args = ("--until", "shard_data") if script == "verify" else ("--out", "archive.tar.gz")
    line = refused(run(script, root, *args, tmp=tmp_path), "tunemake.lock: a `sources` key '/etc/hostname'")
    assert "is an absolute path" in line
    assert not (root / "archive.tar.gz").exists()


def test_a_path_through_a_symbolic_link_leading_out_is_refused(tmp_path):
    root = tmp_path / "wf"
    workflow_with_lock(
        root,
        lambda lock: lock["runs"]["demo"].update(spec="linked/hostname"),
    )
    (root / "linked").symlink_to("/etc")
    line = refused(run("archive", root, "--out", "archive.tar.gz"), "`runs.demo.spec` 'linked/hostname'")
    assert "leads out of the workflow folder through a symbolic link (to /etc/hostname)" in line


def test_an_output_path_outside_is_refused(tmp_path):
    root = tmp_path / "wf"

    def edit(lock):
        (entry,) = lock["artifacts"].values()
        entry["outputs"]["/etc/passwd"] = {"bytes": 1, "sha256": "2" * 64}

    workflow_with_lock(root, edit)
    refused(run("verify", root, tmp=tmp_path), "an output of `artifacts.results/data/", "'/etc/passwd'")


def _no_outputs_list(lock):
    (entry,) = lock["artifacts"].values()
    entry["outputs"] = ["results/x"]
    return lock


# how the lock is broken: (lock -> the text written, the start of the refusal)
BROKEN = {
    "invalid-yaml": (
        lambda lock: "lock_version: 1\nruns: [\n  - a: b\n c\n",
        "tunemake.lock:3: not valid YAML",
    ),
    "truncated-json": (
        lambda lock: json.dumps(lock)[:300],
        "tunemake.lock:1: not valid YAML (found unexpected end of stream)",
    ),
    "no-artifacts": (
        lambda lock: {k: v for k, v in lock.items() if k != "artifacts"},
        "tunemake.lock: no `artifacts` key; expected each step manifest's",
    ),
    "no-steps": (
        lambda lock: {**lock, "runs": {"demo": {"spec": "specs/demo.yaml", "steps": {}}}},
        "tunemake.lock: `runs` lists no steps, so there is nothing to check or rebuild",
    ),
    "a-list": (
        lambda lock: [1, 2],
        "tunemake.lock: holds a list, expected a mapping with lock_version, code",
    ),
    "outputs-a-list": (
        _no_outputs_list,
        "`artifacts.results/data/0123456789ab/raw.manifest.json.outputs` is a list",
    ),
}


@pytest.mark.parametrize("how", sorted(BROKEN))
@pytest.mark.parametrize("script", ["verify", "archive"])
def test_a_broken_lock_is_refused_with_the_file_what_was_expected_and_the_fix(tmp_path, how, script):
    root = tmp_path / "wf"
    lock_path = workflow_with_lock(root)
    broken = BROKEN[how][0](yaml.safe_load(lock_path.read_text()))
    lock_path.write_text(broken if isinstance(broken, str) else yaml.safe_dump(broken))
    args = ("--until", "shard_data") if script == "verify" else ("--out", "archive.tar.gz")
    line = refused(run(script, root, *args, tmp=tmp_path), BROKEN[how][1])
    assert "rerun `snakemake lock --cores 1`" in line, line
    assert not (root / "archive.tar.gz").exists()


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """tunemake.lock, the archive and every step's outputs are written by atomic_write_bytes."""
    from scripts.common.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "tunemake.lock", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "tunemake.lock").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
