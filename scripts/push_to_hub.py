"""Upload the smoke-tested export folder to the Hugging Face Hub (opt-in: export.push_to_hub).

The token comes only from the HF_TOKEN environment variable: it is never a flag, never in
the spec, and never written to the manifest, the log or the card (error messages are
redacted too). Offline (HF_HUB_OFFLINE=1) or without a token, the step fails with a clear
message before any network call.

    HF_TOKEN=hf_... python -m scripts.push_to_hub \
        --spec-json '{"push_to_hub": {"repo_id": "me/demo", "private": true}}' \
        --folder results/runs/demo/export --smoke-test results/runs/demo/smoke_test.manifest.json \
        --manifest results/runs/demo/push_to_hub.manifest.json --run demo
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.manifest import write_manifest

SKIP = [".snakemake_timestamp"]
TRUE = {"1", "on", "yes", "true"}


def redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def hub_token(environ) -> str:
    """HF_TOKEN from the environment, after checking the hub is reachable in principle."""
    if str(environ.get("HF_HUB_OFFLINE", "")).lower() in TRUE:
        raise PermissionError(
            "export.push_to_hub is set but the hub is offline (HF_HUB_OFFLINE is set): unset "
            "HF_HUB_OFFLINE to push, or remove export.push_to_hub from the spec to export locally"
        )
    token = environ.get("HF_TOKEN", "").strip()
    if not token:
        raise PermissionError(
            "export.push_to_hub is set but HF_TOKEN is not: export a token with write access "
            "(https://huggingface.co/settings/tokens) as HF_TOKEN; tunemake reads it only from "
            "the environment and never writes it to a file"
        )
    return token


def upload(folder: str, target: dict, token: str, api=None) -> dict:
    """Create the repository if needed and upload the folder in one commit."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(target["repo_id"], private=target["private"], exist_ok=True, repo_type="model")
    info = api.upload_folder(
        folder_path=folder,
        repo_id=target["repo_id"],
        repo_type="model",
        commit_message="Upload model exported with tunemake",
        ignore_patterns=SKIP,
    )
    return {"commit": getattr(info, "oid", None), "url": getattr(info, "commit_url", None)}


def pushed_details(target: dict, pushed: dict, token: str) -> dict:
    """What the manifest records of the push, with anything token-like redacted."""
    clean = {k: None if v is None else redact(str(v), token) for k, v in pushed.items()}
    return {"repo_id": target["repo_id"], "private": target["private"], **clean}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec-json", required=True, help='{"push_to_hub": {"repo_id": ..., "private": ...}}'
    )
    parser.add_argument("--folder", required=True, help="the export folder")
    parser.add_argument("--smoke-test", required=True, help="the passing smoke test's manifest")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--run")
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None, api=None):
    args = parse_args(argv)
    start = time.perf_counter()
    spec = json_arg(args.spec_json)
    target = spec["push_to_hub"]
    try:
        token = hub_token(os.environ)
    except PermissionError as exc:
        fail(str(exc))
    files = sorted(p for p in Path(args.folder).rglob("*") if p.is_file() and p.name not in SKIP)
    print(f"pushing {len(files)} files to {target['repo_id']}", file=sys.stderr)
    try:
        pushed = upload(args.folder, target, token, api)
    except Exception as exc:  # hub and network errors alike: one line, never the token
        fail(redact(f"push to {target['repo_id']} failed: {type(exc).__name__}: {exc}", token))
    write_manifest(
        args.manifest,
        "push_to_hub",
        spec,
        run=args.run,
        inputs=[args.smoke_test, *files],
        counts={"files": len(files)},
        details=pushed_details(target, pushed, token),
        timings={"total": time.perf_counter() - start},
        environment=args.environment,
    )
    print(f"pushed: {redact(str(pushed['url']), token)}", file=sys.stderr)


if __name__ == "__main__":
    main()
