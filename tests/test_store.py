"""The shared store (docs/store.md): what one clone publishes, another pulls instead of building,
each file checked against its recorded sha256; a corrupted object is refused, named and rebuilt."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from scripts.compiler.store import OBJECT_FILE, Artifact, check_object, publish
from tests.workflow_fixtures import copy_built, copy_workflow, jobs_run, snakemake

EXPORT = "results/runs/demo/export"


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_second_clone_pulls_what_the_first_published_and_rebuilds_a_corrupt_object(demo_build, tmp_path):
    built = copy_built(demo_build, tmp_path / "a")
    store = tmp_path / "store"
    published = snakemake(built, "publish_store", "--config", f"store={store}")
    assert "store: published train" in published.stdout + published.stderr

    clone = copy_workflow(tmp_path / "b")
    first = snakemake(clone, "export", "--config", f"store={store}")
    jobs = jobs_run(first)
    assert jobs["tokenize_shard"] == jobs["base_model"] == jobs["train_model"] == jobs["merge_model"] == 0, (
        jobs
    )
    assert (
        jobs["pull_tokens"] >= 1 and jobs["pull_model"] == jobs["pull_train"] == jobs["pull_merged"] == 1
    ), jobs
    assert tree_digest(clone / EXPORT) == tree_digest(built / EXPORT)

    # a corrupted object (same size, one byte flipped), missing in the clone: refused, named, rebuilt
    shard = sorted((store / "tokens").glob("*/*/*.parquet"))[0]
    local = clone / "results/tokens" / shard.parent.parent.name / shard.name
    good = shard.read_bytes()
    shard.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    local.unlink()
    second = snakemake(clone, "export", "--config", f"store={store}")
    assert f"store: refused tokens {shard.parent.parent.name}/{shard.parent.name}" in second.stderr
    assert f"{shard}: sha256 " in second.stderr and "Traceback" not in second.stderr
    assert jobs_run(second)["tokenize_shard"] == 1
    assert local.read_bytes() == good and shard.read_bytes() == good  # rebuilt, and the store repaired
    assert tree_digest(clone / EXPORT) == tree_digest(built / EXPORT)


def small_artifact(workdir: Path) -> Artifact:
    base = workdir / "results/tokens/k"
    (base / "m").mkdir(parents=True)
    (base / "m/a.bin").write_bytes(b"x" * 1000)
    (base / "s.parquet").write_bytes(b"tokens")
    outputs = [
        {"path": str(p.relative_to(workdir)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in (base / "m/a.bin", base / "s.parquet")
    ]
    (base / "s.manifest.json").write_text(json.dumps({"outputs": outputs}))
    return Artifact("tokens", "k/s", "results/tokens/k", ("m", "s.parquet", "s.manifest.json"))


def test_two_publishers_of_one_key_leave_one_intact_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifact = small_artifact(tmp_path)
    store = tmp_path / "store"
    results = []
    threads = [threading.Thread(target=lambda: results.append(publish(store, artifact))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "published" in results and set(results) <= {"published", "present"}, results
    folder = artifact.folder(store)
    assert check_object(folder, artifact) is None
    assert sorted(p.name for p in folder.parent.iterdir()) == ["s"]  # no temporary folder left
    assert set(json.loads((folder / OBJECT_FILE).read_text())["files"]) == {
        "m/a.bin",
        "s.parquet",
        "s.manifest.json",
    }
    (folder / "m/a.bin").write_bytes(b"y" * 1000)
    assert "m/a.bin: sha256" in check_object(folder, artifact)
    assert publish(store, artifact) == "replaced" and check_object(folder, artifact) is None
