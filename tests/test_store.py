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


@pytest.fixture
def s3_store(monkeypatch):
    """A local S3-compatible server (moto's server mode) on the loopback address, stopped after;
    its credentials only in the environment."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "store-test-key-id",
        "AWS_SECRET_ACCESS_KEY": "store-test-secret-never-written",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket="tunemake-store")
    yield "s3://tunemake-store/shared"
    server.stop()


def test_an_s3_store_publishes_once_pulls_checked_and_refuses_a_corrupt_object(
    s3_store, tmp_path, monkeypatch, capsys
):
    import boto3

    from scripts.compiler import store

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.chdir(a)
    artifact = small_artifact(a)
    results = []
    threads = [threading.Thread(target=lambda: results.append(publish(s3_store, artifact))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results).count("published") == 1 and set(results) <= {"published", "present"}, results

    monkeypatch.chdir(b)  # another clone: pulls, each file checked
    assert store.pull_choice(s3_store, artifact)
    store.pull(s3_store, artifact)
    assert tree_digest(b / artifact.base) == tree_digest(a / artifact.base)
    written = "".join(p.read_text() for p in b.rglob("*") if p.is_file() and p.suffix == ".json")
    assert "store-test-secret-never-written" not in written and "store-test-key-id" not in written

    client = boto3.client("s3")  # a corrupted file in the store: refused, named, then replaced
    record = json.loads(
        client.get_object(Bucket="tunemake-store", Key="shared/tokens/k/s/object.json")["Body"].read()
    )
    client.put_object(
        Bucket="tunemake-store", Key=f"shared/tokens/k/s/{record['version']}/s.parquet", Body=b"tokenZ"
    )
    (b / artifact.base / "s.parquet").unlink()
    store._CHOICES.clear()
    assert not store.pull_choice(s3_store, artifact)
    assert "store: refused tokens k/s" in capsys.readouterr().err
    monkeypatch.chdir(a)
    assert publish(s3_store, artifact) == "replaced" and publish(s3_store, artifact) == "present"
