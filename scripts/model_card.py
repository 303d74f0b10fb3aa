"""Write the model card (README.md with hub metadata) and assemble the export folder.

The export folder is the merged model's files (hard-linked, so no copy of large weights)
plus this card; changing the card text never re-merges.

    python -m scripts.model_card --spec-json "$(cat card.json)" --run demo --run-spec "$(cat spec.json)" \
        --merged results/runs/demo/merged --report results/runs/demo/evaluate/report.json \
        --train-manifest ... --base-manifest ... --out results/runs/demo/export
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from scripts.common.files import atomic_write_text, read_json


def metrics_table(report: dict) -> str:
    base, tuned = report["metrics"]["base"] or {}, report["metrics"]["tuned"]
    lines = ["| metric | base | tuned |", "|---|---|---|"]
    for name, value in tuned.items():
        before = f"{base[name]:.4g}" if name in base else "-"
        lines.append(f"| {name} | {before} | {value:.4g} |")
    return "\n".join(lines)


def render_card(card: dict, run: str, spec_text: str, report: dict, train: dict, base: dict) -> str:
    """The README.md text: YAML metadata, summary, evaluation, training, spec, provenance."""
    meta = {
        "library_name": "transformers",
        "license": card["license"],
        "language": card["language"],
        "tags": ["tunemake", "sft", train["details"]["method"], *card["tags"]],
        "base_model": base["details"]["weights"] if base["details"]["source"] != "build" else None,
        "model-index": [
            {
                "name": run,
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "metrics": [{"type": k, "value": v} for k, v in report["metrics"]["tuned"].items()],
                    }
                ],
            }
        ],
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    prov, counts = train["provenance"], train["counts"]
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {run}

{card["summary"] or "Fine-tuned with tunemake."}

## Evaluation ({report["examples"]} validation examples, base against tuned)

{metrics_table(report)}

## Training

- method: {train["details"]["method"]}, precision: {train["details"]["precision"]}
- steps: {counts["steps"]}, examples: {counts["examples"]}, tokens: {counts["train_tokens"]}
- loss: {train["details"]["first_loss"]:.4f} -> {train["details"]["final_loss"]:.4f}
- trainable parameters: {counts["trainable_parameters"]} of {counts["total_parameters"]}

## Spec

```yaml
{spec_text.strip()}
```

## Provenance

- base model: {base["details"]["source"]} ({base["details"]["weights"]})
- training data: {", ".join(i["path"] + " " + i["sha256"][:12] for i in train["inputs"])}
- packages: {", ".join(f"{k} {v}" for k, v in sorted(prov["packages"].items()))}
- device: {prov["device"]}, git commit: {prov["git_commit"]}
"""


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of src into dst (copy where links are not possible)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-json", required=True, help="the export.card section as JSON")
    parser.add_argument("--run", required=True)
    parser.add_argument("--run-spec", required=True, help="the run's compiled spec as JSON")
    parser.add_argument("--merged", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--train-manifest", required=True)
    parser.add_argument("--base-manifest", required=True)
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    card = json.loads(args.spec_json)
    text = render_card(
        card,
        args.run,
        yaml.safe_dump(json.loads(args.run_spec), sort_keys=False),
        read_json(args.report),
        read_json(args.train_manifest),
        read_json(args.base_manifest),
    )
    out = Path(args.out)
    link_tree(Path(args.merged), out)
    atomic_write_text(out / "README.md", text)
    print(f"export folder ready: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
