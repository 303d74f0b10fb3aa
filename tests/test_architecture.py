"""The shape the design promises: steps meet only through files (no script imports another
script; the rules import only scripts/common/), and each step has one word, shared by its rule,
its script, its log, its manifest's `step`, its manifest schema and the step table."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from scripts.common.steps import READS, STEP_ORDER

REPO = Path(__file__).resolve().parents[1]
STEP_SCRIPTS = sorted(p.stem for p in (REPO / "scripts").glob("*.py") if p.stem != "__init__")
RULE = re.compile(r"^(?:checkpoint|rule) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def step_scripts_imported(modules: set[str]) -> set[str]:
    return {m.split(".")[1] for m in modules if m.startswith("scripts.") and m.split(".")[1] in STEP_SCRIPTS}


def test_no_script_imports_another_script():
    offenders = {}
    for path in sorted((REPO / "scripts").rglob("*.py")):
        imported = step_scripts_imported(imported_modules(path.read_text())) - {path.stem}
        if imported:
            offenders[str(path.relative_to(REPO))] = sorted(imported)
    assert offenders == {}


def test_the_dag_imports_only_scripts_common():
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        lines = [line.strip() for line in path.read_text().splitlines()]
        imports = [line for line in lines if re.match(r"(from|import) scripts", line)]
        assert all(line.startswith("from scripts.common.") for line in imports), (path.name, imports)


def test_the_import_check_catches_a_script_importing_a_script():
    assert step_scripts_imported(imported_modules("from scripts.shard_data import main")) == {"shard_data"}
    assert step_scripts_imported(imported_modules("from scripts import merge_model")) == {"merge_model"}
    assert step_scripts_imported(imported_modules("from scripts.common.steps import READS")) == set()


def rules() -> dict[str, str]:
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    return {name: body for name, body in RULE.findall(text)}


def test_every_rule_shares_one_word_with_its_script_log_and_manifest():
    found = rules()
    assert set(STEP_ORDER) <= set(found)
    with_manifest = set()
    for name, body in found.items():
        scripts = re.findall(r"python -m scripts\.(\w+)", body)
        assert scripts == [name], (name, scripts)
        (log,) = re.findall(r'log:\s*\n\s*"([^"]+)"', body)
        assert name in Path(log).parts or Path(log).stem == name, (name, log)
        output = re.search(r"\n    output:\n(.*?)\n    \w+:", body, re.DOTALL)
        manifests = re.findall(r'"([^"]+\.manifest\.json)"', output[1] if output else "")
        schema = REPO / "schemas/manifests" / f"{name}.schema.json"
        if manifests:
            with_manifest.add(name)
            assert schema.is_file(), name
            assert json.loads(schema.read_text())["properties"]["step"]["const"] == name
            source = (REPO / "scripts" / f"{name}.py").read_text()
            assert re.search(rf'write_manifest\(\s*[^,]+,\s*"{name}"', source), name
    assert set(STEP_ORDER) <= with_manifest
    assert set(READS) == set(STEP_ORDER)
    for step, upstream in READS.items():  # the table only names steps that exist, in DAG order
        assert all(STEP_ORDER.index(up) < STEP_ORDER.index(step) for up in upstream), step
