"""S3-compatible object storage as the shared store's transport (`--config store=s3://bucket/prefix`,
docs/store.md): credentials and endpoint come only from the environment (boto3's variables:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...), and nothing here writes them.

An object is `<prefix>/<kind>/<key>/object.json`, naming a version folder beside it that holds the
files. A publisher uploads its own version folder, then creates object.json only if there is none
(a conditional write, If-None-Match: *): of two publishers one wins, and an object never mixes the
files of both. Pure transport: the checks are store.py's, on a local mirror of the object.
boto3 is imported only when an s3:// store is named.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

OBJECT_FILE = "object.json"


def is_s3(store) -> bool:
    return str(store).startswith("s3://")


def _place(store: str, kind: str, key: str) -> tuple[str, str]:
    bucket, _, prefix = store[len("s3://") :].partition("/")
    return bucket, "/".join(part for part in (prefix.strip("/"), kind, key) if part)


def _client():
    import boto3

    # a session per client: boto3's default one is not thread-safe
    return boto3.session.Session().client("s3")


def _missing(exc) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def exists(store: str, kind: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    bucket, base = _place(store, kind, key)
    try:
        _client().head_object(Bucket=bucket, Key=f"{base}/{OBJECT_FILE}")
    except ClientError as exc:
        if _missing(exc):
            return False
        raise
    return True


def download(store: str, kind: str, key: str, dest: Path) -> bool:
    """The object into the new folder `dest` (object.json and every file it names that is there);
    False when the store has no such object."""
    from botocore.exceptions import ClientError

    bucket, base = _place(store, kind, key)
    client = _client()
    try:
        raw = client.get_object(Bucket=bucket, Key=f"{base}/{OBJECT_FILE}")["Body"].read()
    except ClientError as exc:
        if _missing(exc):
            return False
        raise
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    (dest / OBJECT_FILE).write_bytes(raw)
    record = json.loads(raw)
    for name in record.get("files", {}):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, f"{base}/{record['version']}/{name}", str(dest / name))
        except ClientError as exc:  # a missing file: the check names it
            if not _missing(exc):
                raise
    return True


def upload(store: str, kind: str, key: str, source: Path, record: dict, *, replace: bool) -> str:
    """Upload the files `record` lists (relative to `source`) into a new version folder, then
    object.json: "published", "replaced" (with `replace`: over a corrupt one), or "present"
    (another publisher's object.json came first; this version folder is removed)."""
    from botocore.exceptions import ClientError

    bucket, base = _place(store, kind, key)
    client = _client()
    version = f"v-{uuid.uuid4().hex[:16]}"
    for name in record["files"]:
        client.upload_file(str(source / name), bucket, f"{base}/{version}/{name}")
    body = json.dumps(record | {"version": version}, indent=1, sort_keys=True).encode()
    try:
        if replace:
            client.put_object(Bucket=bucket, Key=f"{base}/{OBJECT_FILE}", Body=body)
        else:
            client.put_object(Bucket=bucket, Key=f"{base}/{OBJECT_FILE}", Body=body, IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "PreconditionFailed",
            "412",
            "ConditionalRequestConflict",
        ):
            raise
        for name in record["files"]:
            client.delete_object(Bucket=bucket, Key=f"{base}/{version}/{name}")
        return "present"
    return "replaced" if replace else "published"
