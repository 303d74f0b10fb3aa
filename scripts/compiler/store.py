"""The shared artifact store: content-keyed artifacts published to, and pulled from, a folder
named at runtime (`--config store=PATH` or TUNEMAKE_STORE), never part of any key (docs/store.md).

One object per artifact, `<store>/<kind>/<content key>/`: the artifact's files as its step wrote
them (its manifest included) and `object.json`, the sha256 and size of every file. A pulled file
is checked against the sha256 its step's manifest recorded (and object.json, which covers the
manifest itself); an object that fails is refused, named, and rebuilt here. Publishing copies
into a temporary folder and renames it into place: two publishers of one key leave one intact
copy. Stdlib only: the rules call it at DAG-build time (pull_choice), the pull and publish
scripts at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from scripts.compiler import store_s3
from scripts.compiler.spec import short_hash

OBJECT_FILE = "object.json"
PULLED = Path("results/store/pulled")  # receipts: which local artifacts came from a store
MIRROR = Path(".snakemake/tunemake-store")  # objects of an s3:// store, downloaded to be checked


class StoreError(RuntimeError):
    """A store object or a local artifact that cannot be published or pulled (the message says why)."""


@dataclass(frozen=True)
class Artifact:
    """A content-keyed artifact: its kind, its key in the store, and its files here: `names`
    (files or folders) under the local folder `base`, its manifest last."""

    kind: str
    key: str
    base: str
    names: tuple[str, ...]

    @property
    def manifest(self) -> Path:
        return Path(self.base) / self.names[-1]

    @property
    def receipt(self) -> Path:
        return PULLED / self.manifest.relative_to("results").with_suffix("").with_suffix(".pulled.json")

    def is_here(self) -> bool:
        """Are all its files (or folders) in this workflow?"""
        return all((Path(self.base) / name).exists() for name in self.names)

    def folder(self, store: str | Path) -> Path:
        return Path(store) / self.kind / self.key

    def as_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "base": self.base, "names": list(self.names)}


def tokens_artifact(tkey: str, shard: str) -> Artifact:
    return Artifact(
        "tokens", f"{tkey}/{shard}", f"results/tokens/{tkey}", (f"{shard}.parquet", f"{shard}.manifest.json")
    )


def model_artifact(mkey: str) -> Artifact:
    return Artifact("models", mkey, f"results/models/{mkey}", ("model", "model.manifest.json"))


def train_artifact(run: str, train_key: str) -> Artifact:
    """A run's trained model (adapter or full weights) and its training log, keyed by the train key."""
    return Artifact("train", train_key, f"results/runs/{run}", ("train", "train.manifest.json"))


def merged_key(train_key: str, merge_slice: dict) -> str:
    """A merged model's key: what trained it (the train key, which holds the base's) and the
    merge's slice (dtype, shard size, the evaluated decoding its generation_config carries)."""
    return short_hash({"merge_model": merge_slice, "train": train_key})


def merged_artifact(run: str, key: str) -> Artifact:
    """A run's merged model (results/runs/<run>/merged and merged.manifest.json), keyed by merged_key."""
    return Artifact("merged", key, f"results/runs/{run}", ("merged", "merged.manifest.json"))


def choose_store(config: dict) -> str | None:
    """The store this run uses: --config store=PATH, else the TUNEMAKE_STORE environment variable;
    exported as TUNEMAKE_STORE, where the pull and publish scripts of its jobs find it."""
    store = config.get("store") or os.environ.get("TUNEMAKE_STORE") or None
    if store:
        os.environ["TUNEMAKE_STORE"] = str(store)
    return store


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files_under(base: Path, names) -> list[str]:
    """Every file of the artifact, relative to `base`, sorted."""
    files = []
    for name in names:
        path = base / name
        if path.is_dir():
            files += [str(p.relative_to(base)) for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            files.append(name)
        else:
            raise StoreError(f"{path} is missing")
    return sorted(files)


def _manifest_records(manifest: dict, base: str) -> dict[str, str]:
    """The sha256 the step recorded for each output file, by path relative to `base` (where the
    step that wrote it ran: a train object published from run A names run A's paths)."""
    return {os.path.relpath(entry["path"], base): entry["sha256"] for entry in manifest.get("outputs", [])}


def check_object(folder: Path, artifact: Artifact) -> str | None:
    """None when the object at `folder` is intact, else what is wrong (naming the file)."""
    try:
        record = json.loads((folder / OBJECT_FILE).read_text(encoding="utf-8"))
        files = record["files"]
        manifest_name = artifact.names[-1]
        manifest = json.loads((folder / manifest_name).read_text(encoding="utf-8"))
        stepped = _manifest_records(manifest, record["base"])
        present = set(_files_under(folder, artifact.names))
    except (OSError, ValueError, KeyError, StoreError) as exc:
        return f"unreadable object ({exc})"
    if present != set(files):
        odd = sorted(present ^ set(files))
        return f"{folder / odd[0]} is {'not recorded' if odd[0] in present else 'missing'} in {OBJECT_FILE}"
    for name, entry in sorted(files.items()):
        expected = stepped.get(name, entry["sha256"])
        if expected != entry["sha256"]:
            return f"{OBJECT_FILE} and {manifest_name} disagree on {name}"
        actual = sha256_file(folder / name)
        if actual != expected:
            return f"{folder / name}: sha256 {actual[:16]}, but its manifest records {expected[:16]}"
    return None


def _refuse(artifact: Artifact, folder: Path, problem: str) -> None:
    print(
        f"store: refused {artifact.kind} {artifact.key} ({folder}): {problem}. "
        "Not pulled: it is rebuilt here, and the rebuilt copy replaces it in the store.",
        file=sys.stderr,
    )


_CHOICES: dict[tuple, bool] = {}
REFUSED: list[Artifact] = []  # refused this run: republished after the build (push_after_build)


def pull_choice(store: str | None, artifact: Artifact) -> bool:
    """DAG-build time: does the pull rule produce this artifact (else its own step builds it)?
    Yes for an artifact pulled before (its receipt is here), and for one missing here (any of its
    files) whose object in the store is intact (checked once per run). An artifact built here stays built here."""
    cached = _CHOICES.get((store, artifact))
    if cached is not None:
        return cached
    if artifact.is_here():
        choice = artifact.receipt.exists()
    else:
        artifact.receipt.unlink(missing_ok=True)
        folder = _reachable_object(store, artifact) if store else None
        choice = False
        if folder is not None and folder.is_dir():
            problem = check_object(folder, artifact)
            choice = problem is None
            if problem:
                _refuse(artifact, folder, problem)
                REFUSED.append(artifact)
                if store_s3.is_s3(store):
                    shutil.rmtree(folder, ignore_errors=True)
    _CHOICES[(store, artifact)] = choice
    return choice


def _reachable_object(store: str, artifact: Artifact) -> Path | None:
    """_object_here, downloaded afresh; an S3 store that cannot be read (endpoint, credentials)
    is named, and the artifact built here."""
    try:
        return _object_here(store, artifact, fresh=True)
    except Exception as exc:  # botocore's errors share no base class with OSError
        if not store_s3.is_s3(store):
            raise
        print(
            f"store: cannot read {store} ({type(exc).__name__}: {exc}); building {artifact.kind} {artifact.key} here",
            file=sys.stderr,
        )
        return None


def _copy_checked(source: Path, dest: Path, artifact: Artifact, expected: dict[str, str]) -> None:
    """Copy the artifact's files from `source` to the new folder `dest`, each checked on arrival."""
    for name in _files_under(source, artifact.names):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
        if expected is not None and sha256_file(target) != expected[name]:
            raise StoreError(f"{source / name} changed while it was copied (sha256 differs from its record)")


def _object_here(store: str, artifact: Artifact, fresh: bool = False) -> Path | None:
    """The object's folder: in a folder store, itself; from an s3:// store, a local mirror
    (downloaded when the run decides to pull, reused by the pull job; None when the store has
    no such object)."""
    if not store_s3.is_s3(store):
        return artifact.folder(store)
    mirror = MIRROR / artifact.kind / artifact.key
    if not fresh and (mirror / ".complete").exists():
        return mirror
    if not store_s3.download(store, artifact.kind, artifact.key, mirror):
        return None
    (mirror / ".complete").touch()
    return mirror


def pull(store: str, artifact: Artifact) -> None:
    """Copy an intact object into place here (checked file by file), and leave a receipt."""
    folder = _object_here(store, artifact)
    if folder is None:
        raise StoreError(f"store {store} has no {artifact.kind} {artifact.key}")
    problem = check_object(folder, artifact)
    if problem:
        raise StoreError(f"store object {artifact.kind} {artifact.key} ({folder}) refused: {problem}")
    files = json.loads((folder / OBJECT_FILE).read_text(encoding="utf-8"))["files"]
    base = Path(artifact.base)
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".pull-{uuid.uuid4().hex[:12]}"
    try:
        _copy_checked(folder, staging, artifact, {name: entry["sha256"] for name, entry in files.items()})
        for name in artifact.names:  # the manifest last: nothing half-pulled looks complete
            target = base / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if store_s3.is_s3(store):
        shutil.rmtree(folder, ignore_errors=True)
    artifact.receipt.parent.mkdir(parents=True, exist_ok=True)
    receipt = {"store": str(store), "object": str(artifact.folder(store)), "artifact": artifact.as_dict()}
    artifact.receipt.write_text(json.dumps(receipt, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _local_record(artifact: Artifact) -> dict:
    """object.json of a local artifact, after checking its files against its own manifest."""
    base = Path(artifact.base)
    manifest = json.loads(artifact.manifest.read_text(encoding="utf-8"))
    stepped = _manifest_records(manifest, artifact.base)
    files = {}
    for name in _files_under(base, artifact.names):
        digest = sha256_file(base / name)
        if stepped.get(name, digest) != digest:
            raise StoreError(f"{base / name} does not match its manifest {artifact.manifest}: not published")
        files[name] = {"sha256": digest, "bytes": (base / name).stat().st_size}
    return {
        "kind": artifact.kind,
        "key": artifact.key,
        "base": artifact.base,
        "files": files,
        "published_from": {"host": socket.gethostname(), "folder": str(Path.cwd())},
    }


def publish(store: str, artifact: Artifact, *, check_present: bool = True) -> str:
    """Put a local artifact into the store: "present" (an intact copy is there), "published" or
    "replaced" (a corrupt copy was there). Atomic: a temporary folder renamed into place, so of
    two publishers of one key, one rename wins and the other finds its intact copy."""
    if store_s3.is_s3(store):
        return _publish_s3(store, artifact, check_present)
    folder = artifact.folder(store)
    corrupt = folder.is_dir()
    if corrupt and (not check_present or check_object(folder, artifact) is None):
        return "present"
    record = _local_record(artifact)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:12]}")
    try:
        _copy_checked(Path(artifact.base), staging, artifact, None)
        (staging / OBJECT_FILE).write_text(
            json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        if corrupt and check_object(folder, artifact) is not None:
            _move_aside(folder)  # renamed first, so no reader sees it half-deleted
        try:
            os.rename(staging, folder)
        except OSError:  # another publisher's copy arrived first
            problem = check_object(folder, artifact)
            if problem:
                raise StoreError(f"{folder}: another publisher's copy is broken: {problem}") from None
            return "present"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return "replaced" if corrupt else "published"


def _move_aside(folder: Path) -> None:
    aside = folder.with_name(f".corrupt-{folder.name}-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(folder, aside)
    except OSError:
        return  # another publisher moved it first
    shutil.rmtree(aside, ignore_errors=True)


def _publish_s3(store: str, artifact: Artifact, check_present: bool) -> str:
    """publish() to an s3:// store: an object there is checked on a fresh download."""
    present = store_s3.exists(store, artifact.kind, artifact.key)
    if present and check_present:
        shutil.rmtree(MIRROR / artifact.kind / artifact.key, ignore_errors=True)
        present = check_object(_object_here(store, artifact), artifact) is None
        shutil.rmtree(MIRROR / artifact.kind / artifact.key, ignore_errors=True)
        if present:
            return "present"
        return store_s3.upload(
            store, artifact.kind, artifact.key, Path(artifact.base), _local_record(artifact), replace=True
        )
    if present:
        return "present"
    return store_s3.upload(
        store, artifact.kind, artifact.key, Path(artifact.base), _local_record(artifact), replace=False
    )
