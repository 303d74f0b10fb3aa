"""Every `snakemake ...` command the docs show runs as written. Snakemake 9 stops a local run
without --cores ("cores have to be specified"), and the workflow profile cannot default it (it
would cap the threads of SLURM jobs), so each shown command carries --cores, or runs nothing
(a dry run, --lint, --report, --unlock), or takes its cores or executor from a --profile.
Checked with Snakemake's own parser and this workflow's profiles; nothing is run."""

from __future__ import annotations

import functools
import json
import re
import shutil

from tests.workflow_fixtures import REPO

# Generated pages: docs/architecture.md quotes module docstrings, docs/bad-inputs.md each
# case's setup (the test that builds it passes --cores); neither shows a command to copy.
GENERATED = {"architecture.md", "bad-inputs.md"}
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
# One command: at the start of a code line or inline span, or after && ; | in one.
COMMAND = re.compile(r"(?:^|&&|;|\|)\s*(?:\w+=\S+\s+)*(?:\.venv/bin/)?(snakemake\b[^;&|#\n]*)", re.MULTILINE)
# Example and spec files show their command in a comment: `#   snakemake export --config ...`.
COMMENT = re.compile(r"^#\s+(snakemake\b.*(?:\\\n#.*)*)", re.MULTILINE)


def shown_in_markdown(text: str) -> list[str]:
    """The commands in fenced code blocks (one a line, `\\` continues it) and inline code."""
    blocks = [b.replace("\\\n", " ") for b in FENCE.findall(text)]
    spans = [" ".join(m[1].split()) for m in INLINE.finditer(FENCE.sub("", text))]
    return [m[1].strip() for part in blocks + spans for m in COMMAND.finditer(part)]


def shown_commands() -> dict[str, list[str]]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    shown = {p.name: shown_in_markdown(p.read_text()) for p in pages if p.name not in GENERATED}
    notebook = json.loads((REPO / "notebooks/quickstart.ipynb").read_text())
    shown["quickstart.ipynb"] = [
        c
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
        for c in shown_in_markdown("".join(cell["source"]))
    ]
    for spec in sorted([*(REPO / "examples").rglob("*.yaml"), *(REPO / "specs").glob("*.yaml")]):
        comments = (m[1] for m in COMMENT.finditer(spec.read_text()))
        shown[str(spec.relative_to(REPO))] = [" ".join(c.replace("\\\n#", " ").split()) for c in comments]
    return shown


@functools.cache  # the same command shown on several pages is parsed once
def stops_without_cores(command: str) -> bool:
    """What Snakemake's cli.args_to_api and api.execute_workflow decide for this command line."""
    from snakemake.cli import parse_args

    words = command.split()[1:]
    if words == ["--version"]:
        return False
    args = parse_args(words)[1]
    runs_nothing = args.dryrun or args.touch or args.lint is not None or args.report or args.unlock
    local = args.executor in (None, "local")
    return not runs_nothing and local and args.cores is None and args.jobs is None


def test_every_snakemake_command_the_docs_show_runs_as_written(tmp_path, monkeypatch):
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    (tmp_path / "Snakefile").touch()  # Snakemake reads profiles/default beside a Snakefile
    monkeypatch.chdir(tmp_path)
    shown = shown_commands()
    targets = {c.split()[1] for commands in shown.values() for c in commands if len(c.split()) > 1}
    assert targets >= {"export", "why", "lock", "verify", "verify_local", "archive", "compare"}, shown
    assert shown["quickstart.ipynb"] and shown["examples/qwen_dpo.yaml"], shown
    stopped = [
        f"{where}: `{c}`"
        for where, commands in shown.items()
        for c in commands
        if c != "snakemake" and stops_without_cores(c)
    ]
    assert not stopped, "these stop with 'cores have to be specified' (add --cores 2):\n" + "\n".join(stopped)
