"""Publish a result (README): `snakemake lock`, `snakemake verify` and `snakemake archive` on the
built demo, as a user runs them. The full verify is also the test that two clean builds of the
demo are byte-identical and give the same lock file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.workflow_fixtures import REPO, reproducible_files, snakemake

pytestmark = pytest.mark.slow
# What a user's checkout has besides what the other tests copy (the archive carries them).
USER_PARTS = ("profiles", "Makefile", "requirements.txt", "pyproject.toml")


def copy_built(demo_build: Path, dest: Path) -> Path:
    shutil.copytree(demo_build, dest, symlinks=True)
    for part in USER_PARTS:
        src = REPO / part
        shutil.copytree(src, dest / part) if src.is_dir() else shutil.copy2(src, dest / part)
    return dest


@pytest.fixture(scope="module")
def locked(demo_build, tmp_path_factory) -> Path:
    workdir = copy_built(demo_build, tmp_path_factory.mktemp("publish") / "wf")
    proc = snakemake(workdir, "lock")
    assert "rule lock" in proc.stderr and "rule train_model" not in proc.stderr, "lock rebuilt the demo"
    return workdir


def metrics(workdir: Path) -> dict:
    return json.loads((workdir / "results/runs/demo/evaluate/report.json").read_text())["metrics"]


def verify(workdir: Path, until: str | None = None, keep: bool = False):
    config = [f"verify_until={until}"] * bool(until) + ["verify_keep=true"] * keep
    args = ("verify", "--config", *config) if config else ("verify",)
    proc = snakemake(workdir, *args, check=False)
    return proc, proc.stdout + proc.stderr


def test_the_lock_lists_every_step_with_its_files_hashes_and_provenance(locked):
    lock = yaml.safe_load((locked / "tunemake.lock").read_text())
    run = lock["runs"]["demo"]
    assert run["seeds"] == {"model": 0, "train": 0, "evaluate": 0} and run["threads"] == 2
    steps = {a["step"] for a in lock["artifacts"].values()}
    assert set(run["steps"]) == steps
    assert {"shard_data", "tokenize_shard", "train_model", "merge_model", "export_model"} <= steps
    shards = [p for p, a in lock["artifacts"].items() if a["step"] == "tokenize_shard"]
    assert len(shards) == 4
    for entry in lock["artifacts"].values():
        for path, described in entry["outputs"].items():
            if "volatile" not in described:
                assert described["bytes"] == (locked / path).stat().st_size, path
                assert len(described["sha256"]) == 64, path
    assert lock["sources"]["data/demo/spell_digits.jsonl"]["bytes"] > 0
    assert lock["environment"]["packages"]["torch"].startswith("2.13.0")
    assert lock["environment"]["device"]["type"] == "cpu"


def test_verify_rebuilds_the_demo_cleanly_and_every_file_and_the_lock_match(locked):
    """The determinism promise (docs/publish.md: Reliability): a clean rebuild of the demo, in verify's
    kept copy, gives byte-identical shards, tokenizer, weights, predictions and metrics, and the
    same lock file."""
    proc, output = verify(locked, keep=True)
    assert proc.returncode == 0, output[-4000:]
    assert "step | file | expected sha256 | got | match" in output
    assert "train_model | results/runs/demo/train/model/adapter_model.safetensors |" in output
    assert "verify: OK: 36 files of 10 steps match the lock (1 not compared)" in output  # the demo's steps
    assert " | NO" not in output
    (copy,) = {Path(p) for p in re.findall(r"in a clean copy, (/\S+) \(log:", output)}
    try:
        first, second = reproducible_files(locked), reproducible_files(copy)
        assert len(first) >= 12 and first.keys() == second.keys(), sorted(first)
        assert [name for name in first if first[name] != second[name]] == []
        assert metrics(locked) == metrics(copy)
        snakemake(copy, "lock")
        assert (copy / "tunemake.lock").read_text() == (locked / "tunemake.lock").read_text()
    finally:
        shutil.rmtree(copy)


def test_verify_names_the_step_and_file_of_a_token_shard_changed_by_one_byte(demo_build, tmp_path):
    workdir = copy_built(demo_build, tmp_path / "wf")
    shard = sorted((workdir / "results" / "tokens").glob("*/*.parquet"))[0]
    stat, data = shard.stat(), bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # Snakemake sees nothing new
    snakemake(workdir, "lock")
    proc, output = verify(workdir, "tokenize_shard")
    assert proc.returncode != 0, output[-4000:]
    relative = shard.relative_to(workdir).as_posix()
    assert f"verify: FAILED: 1 of 14 files differ; the first is at step tokenize_shard: {relative}" in output
    assert "Its provenance matches the lock" in output
    assert f"tokenize_shard | {relative} |" in output and "| NO" in output


def test_verify_fails_when_the_lock_was_made_with_another_package_version(locked, tmp_path):
    workdir = tmp_path / "wf"
    shutil.copytree(locked, workdir, symlinks=True)
    lock = workdir / "tunemake.lock"
    text = lock.read_text()
    assert "    transformers: 5.24.0\n" in text
    lock.write_text(text.replace("    transformers: 5.24.0\n", "    transformers: 4.0.0\n"))
    proc, output = verify(workdir, "shard_data")
    assert proc.returncode != 0, output[-4000:]
    assert "verify: FAILED: every file matches, but the environment differs from the lock's" in output
    assert "package transformers: 4.0.0 in the lock, 5.24.0 here" in output


def test_an_unknown_verify_step_is_refused_with_a_suggestion(locked):
    proc, output = verify(locked, "tokenise_shard")
    assert proc.returncode != 0
    assert "verify_until: unknown step 'tokenise_shard'; did you mean 'tokenize_shard'?" in output
    assert "rebuilding" not in output


def test_the_archive_unpacks_elsewhere_and_verifies_there(locked, tmp_path):
    snakemake(locked, "archive")
    tarball = locked / "tunemake-archive.tar.gz"
    first = tarball.read_bytes()
    snakemake(locked, "archive", "--forcerun", "archive")
    assert tarball.read_bytes() == first, "the archive is not deterministic"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    unpacked = tmp_path / "tunemake-archive"
    expected = {"README.md", "tunemake.lock", "Snakefile", "Makefile", "requirements.txt", "environment.yml"}
    expected |= {"specs/demo.yaml", "data/demo/spell_digits.jsonl", "rules/publish.smk", "scripts/verify.py"}
    assert {f"tunemake-archive/{name}" for name in expected} <= names
    assert not any("/results/" in n or "/tests/" in n or "__pycache__" in n for n in names)
    readme = (unpacked / "README.md").read_text()
    assert "make verify" in readme and "make export" in readme
    assert (unpacked / "tunemake.lock").read_text() == (locked / "tunemake.lock").read_text()
    proc, output = verify(unpacked, "tokenize_shard")
    assert proc.returncode == 0, output[-4000:]
    assert "verify: OK: 14 files of 3 steps match the lock" in output
    assert not (unpacked / "results" / "runs").exists(), "verify trained in the archive's folder"


def test_verify_rebuilds_the_locked_runs_wherever_their_spec_files_lie():
    """A run locked from examples/ (make demo-bench) is rebuilt from that file in the clean copy,
    not from specs/ (where the copy has no such run)."""
    from scripts.verify import rebuild_command

    lock = {
        "runs": {
            "demo_benchmarks": {"spec": "examples/demo_benchmarks.yaml"},
            "demo": {"spec": "specs/demo.yaml"},
        },
        "artifacts": {"results/runs/demo/train.manifest.json": {"step": "train_model"}},
    }
    command = rebuild_command(lock, ["train_model"], 2)
    assert command[-2:] == ["--config", "specs=examples/demo_benchmarks.yaml,specs/demo.yaml"]
    assert "results/runs/demo/train.manifest.json" in command and "data" in command


def test_a_saved_tokenizer_is_the_same_online_and_offline(demo_build, tmp_path):
    """A build made with the network and its verify without it write the same tokenizer bytes:
    transformers would record local_files_only (HF_HUB_OFFLINE) in tokenizer_config.json."""
    model = next((demo_build / "results/models").glob("*/model"))
    code = (
        "import sys; from scripts.common.modeling import load_tokenizer; "
        "load_tokenizer(sys.argv[1]).save_pretrained(sys.argv[2])"
    )
    saved = []
    for offline in ("0", "1"):
        out = tmp_path / offline
        env = dict(os.environ, HF_HUB_OFFLINE=offline, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", code, str(model), str(out)], env=env, check=True, timeout=120)
        saved.append((out / "tokenizer_config.json").read_bytes())
    assert saved[0] == saved[1], saved


def terminal(proc) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return output


def test_the_lock_and_archive_get_the_users_umask_mode(locked):
    """Written like every other output (0644 under umask 022), not with mkstemp's 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((locked / "tunemake.lock").stat().st_mode) == 0o666 & ~umask


def test_verify_and_archive_refuse_a_locked_path_outside_the_workflow(locked, tmp_path, monkeypatch):
    """The issue's keys, in the real lock, through snakemake: `../outside/evil.txt` (verify used
    to copy it beside its clean copy and say OK) and `/etc/hostname` (archive packed it)."""
    workdir, tmp = tmp_path / "wf", tmp_path / "tmp"
    shutil.copytree(locked, workdir, symlinks=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/evil.txt").write_text("evil\n")
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # where verify makes its clean copy
    path = workdir / "tunemake.lock"
    lock = yaml.safe_load(path.read_text())
    lock["sources"]["../outside/evil.txt"] = {"bytes": 5, "sha256": hashlib.sha256(b"evil\n").hexdigest()}
    path.write_text(yaml.safe_dump(lock))
    output = terminal(verify(workdir, "shard_data")[0])
    assert "error: tunemake.lock: a `sources` key '../outside/evil.txt' climbs out of the workflow" in output
    assert not (tmp / "outside").exists() and not list(tmp.glob("tunemake-verify-*"))
    del lock["sources"]["../outside/evil.txt"]
    lock["sources"]["/etc/hostname"] = {"bytes": 1, "sha256": "0" * 64}
    path.write_text(yaml.safe_dump(lock))
    output = terminal(snakemake(workdir, "archive", check=False))
    assert "error: tunemake.lock: a `sources` key '/etc/hostname' is an absolute path" in output
    assert not (workdir / "tunemake-archive.tar.gz").exists()
    assert "is an absolute path" in terminal(verify(workdir, "shard_data")[0])


def test_verify_local_rehashes_the_files_here_and_names_the_first_that_differs(locked, tmp_path):
    """`snakemake verify_local`: the lock against the files under results/, nothing rebuilt."""
    proc = snakemake(locked, "verify_local")
    output = proc.stdout + proc.stderr
    assert "verify_local: OK: 36 files of 10 steps and 1 data source(s) match the lock" in output
    assert "rule shard_data" not in output and "rule tokenize_shard" not in output
    workdir = tmp_path / "wf"
    shutil.copytree(locked, workdir, symlinks=True)
    shard = sorted((workdir / "results" / "tokens").glob("*/*.parquet"))[0]
    stat_before, data = shard.stat(), bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))  # Snakemake sees nothing new
    output = terminal(snakemake(workdir, "verify_local", check=False))
    relative = shard.relative_to(workdir).as_posix()
    assert (
        f"verify_local: FAILED: 1 of 36 files differ from the lock; the first is at step tokenize_shard: "
        f"{relative} has sha256 " in output
    )


def test_a_source_deleted_after_a_full_build_is_refused_by_export_and_lock(demo_build, tmp_path):
    """Snakemake alone said "Nothing to be done" for export, and lock recorded `missing: true`."""
    workdir = copy_built(demo_build, tmp_path / "wf")
    (workdir / "data/demo/spell_digits.jsonl").unlink()
    message = "data source not found: data/demo/spell_digits.jsonl (data.sources[0].path in specs/demo.yaml"
    for target in ("export", "lock"):
        output = terminal(snakemake(workdir, target, check=False))
        assert message in output and "Nothing to be done" not in output, output[-3000:]
    assert not (workdir / "tunemake.lock").exists()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "scripts.lock", "--specs", "specs/demo.yaml", "--out", "tunemake.lock"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert "error: data source data/demo/spell_digits.jsonl is missing (1 of 1 sources)" in terminal(proc)
    assert not (workdir / "tunemake.lock").exists()
