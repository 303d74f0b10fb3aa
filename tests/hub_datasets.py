"""Local stand-ins for hub datasets: a Hugging Face cache laid out as huggingface_hub lays it
out (datasets--Org--Name/{blobs,refs/<branch>,snapshots/<sha>/...}, snapshot files linking into
blobs/), so that `data.sources[i].hub` resolves with HF_HUB_CACHE pointing here and
HF_HUB_OFFLINE=1, without the network.

Blobs are named as the hub names them: an LFS file (parquet here) by its sha256, any other
file by its git blob sha1. Commit shas are derived from the files, so they are stable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

REPO = "tunemake-tests/spell-digits"
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train.jsonl
  - split: test
    path: data/test.jsonl
- config_name: tables
  data_files: tables/*.parquet
---
# Spell digits (a test fixture)
"""
NAMES = "zero one two three four five six seven eight nine".split()


def spell(number: int) -> dict:
    return {"question": f"Spell {number}:", "answer": " ".join(NAMES[int(d)] for d in str(number))}


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def revisions() -> dict[str, dict[str, bytes]]:
    """Two revisions of the fixture dataset: v2 edits one training record and adds three."""
    train = [spell(n) for n in range(10, 130)]
    test = [spell(n) for n in range(500, 520)]
    first = {
        "README.md": README.encode(),
        "data/train.jsonl": jsonl(train),
        "data/test.jsonl": jsonl(test),
        "tables/part-0.parquet": parquet(train[:20]),
    }
    edited = [*train[:5], {**train[5], "answer": "one five (edited)"}, *train[6:], *map(spell, (7, 8, 9))]
    return {"v1": first, "v2": {**first, "data/train.jsonl": jsonl(edited)}}


def commit_sha(files: dict[str, bytes]) -> str:
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


def blob_name(path: str, data: bytes) -> str:
    if path.endswith(".parquet"):  # an LFS file: stored under its sha256
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id


def add_revision(cache: Path, repo: str, files: dict[str, bytes], refs: tuple[str, ...] = ()) -> str:
    """Write one revision of a dataset repo into the cache; returns its commit sha."""
    folder = cache / ("datasets--" + repo.replace("/", "--"))
    commit = commit_sha(files)
    for path, data in files.items():
        blob = folder / "blobs" / blob_name(path, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)  # huggingface_hub writes no newline
    return commit


def build_cache(cache: Path) -> dict[str, str]:
    """The fixture repo with revisions v1 (refs/main) and v2; returns {"v1": sha, "v2": sha}."""
    versions = revisions()
    return {
        "v2": add_revision(cache, REPO, versions["v2"]),
        "v1": add_revision(cache, REPO, versions["v1"], refs=("main",)),
    }


def move_ref(cache: Path, ref: str, commit: str, repo: str = REPO) -> None:
    (cache / ("datasets--" + repo.replace("/", "--")) / "refs" / ref).write_text(commit)


def hub_env(cache: Path) -> dict[str, str]:
    """Build the fixture cache at `cache` (once) and return the environment that reads it offline
    (the bad-input corpus's hub cases run under it)."""
    if not cache.is_dir():
        build_cache(cache)
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
