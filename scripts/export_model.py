"""Assemble the export folder: the merged model's files and/or the adapter's, hard-linked (no
copy of large weights), plus the model card as README.md. Layout by export.format: merged or
adapter at the top; both: merged at the top, adapter in adapter/. With export.gguf, the GGUF
files and the Modelfile at the top too.

    python -m scripts.export_model --spec-json '{"format": "merged"}' --run demo \
        --pieces results/runs/demo/merged --card results/runs/demo/model_card.md \
        --out results/runs/demo/export --manifest results/runs/demo/export.manifest.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from scripts.common.cli import fail, json_arg
from scripts.common.manifest import write_manifest

SKIP = {".snakemake_timestamp"}


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of src into dst (copy where links are not possible)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if path.name in SKIP:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        link_tree_file(path, target)


def link_tree_file(path: Path, target: Path) -> None:
    """Hard-link one file (copy where links are not possible)."""
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)


def layout(pieces: list[str], fmt: str) -> list[tuple[Path, str]]:
    """(source folder, place in the export folder) for each piece, by export.format."""
    # GGUF files and their Modelfile go to the top of the folder, beside the merged model
    gguf = [Path(p) for p in pieces if (Path(p) / "Modelfile").is_file()]
    adapters = [Path(p) for p in pieces if (Path(p) / "adapter_config.json").is_file()]
    merged = [Path(p) for p in pieces if Path(p) not in adapters and Path(p) not in gguf]
    wanted = {"merged": (1, 0), "adapter": (0, 1), "both": (1, 1)}[fmt]
    if (len(merged), len(adapters)) != wanted:
        raise ValueError(f"export.format {fmt!r} needs {wanted} merged/adapter folders, got {pieces}")
    places = [(m, ".") for m in merged] + [(a, "." if fmt == "adapter" else "adapter") for a in adapters]
    return places + [(g, ".") for g in gguf]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="export.format as JSON")
    parser.add_argument("--run", required=True)
    parser.add_argument(
        "--pieces", nargs="+", required=True, help="merged and/or adapter folders (and the GGUF folder)"
    )
    parser.add_argument("--card", required=True, help="the model card (Markdown) -> README.md")
    parser.add_argument("--out", required=True, help="the export folder to assemble")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--environment")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    spec = json_arg(args.spec_json)
    try:
        places = layout(args.pieces, spec["format"])
    except ValueError as exc:
        fail(str(exc))
    out = Path(args.out)
    for src, place in places:
        link_tree(src, out / place)
    shutil.copyfile(args.card, out / "README.md")  # small: a copy, so editing one leaves the other
    files = sorted(p for p in out.rglob("*") if p.is_file())
    write_manifest(
        args.manifest,
        "export_model",
        spec,
        run=args.run,
        inputs=[args.card],
        outputs=files,
        counts={"files": len(files)},
        details={"format": spec["format"], "folder": str(out), "pieces": [str(p) for p in args.pieces]},
        environment=args.environment,
    )
    print(f"export folder ready: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
