"""The shape the design promises: steps meet only through files (no script imports another
script; the rules import only the compiler), a step's body lives in its stage package, and each
step has one word, shared by its rule,
its script, its log, its manifest's `step`, its manifest schema and the step table."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from scripts.common import architecture_page
from scripts.common.architecture_page import SHARED_PACKAGES, STAGE_ENTRIES
from scripts.compiler.steps import READS, STEP_ORDER

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


STAGES = {stage: set(entries) for stage, entries in STAGE_ENTRIES.items()}
SHARED = set(SHARED_PACKAGES)
PACKAGES = sorted(p.name for p in (REPO / "scripts").iterdir() if (p / "__init__.py").is_file())


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def import_graph() -> dict[str, set[str]]:
    """scripts module -> the scripts modules it imports (at any depth of its code)."""
    names = {module_of(p) for p in (REPO / "scripts").rglob("*.py") if p.stem != "__init__"}
    graph = {}
    for path in sorted((REPO / "scripts").rglob("*.py")):
        if path.stem != "__init__":
            graph[module_of(path)] = {m for m in imported_modules(path.read_text()) if m in names}
    return graph


def test_every_package_is_a_stage_or_shared():
    assert set(PACKAGES) == set(STAGES) | SHARED
    for stage, entries in STAGES.items():
        assert entries <= set(STEP_SCRIPTS), stage


def test_a_stage_package_is_imported_only_by_its_own_entry_scripts():
    offenders = []
    for module, imports in import_graph().items():
        parts = module.split(".")
        own = parts[1] if len(parts) == 3 else None  # scripts.<package>.<module>
        for imported in imports:
            stage = imported.split(".")[1]
            if stage in SHARED or stage == own:
                continue
            if own is None and parts[1] in STAGES.get(stage, ()):
                continue
            offenders.append((module, imported))
    assert offenders == []


def test_the_compiler_imports_only_itself_and_common_imports_no_stage():
    for module, imports in import_graph().items():
        package = module.split(".")[1]
        if package == "compiler":  # compile-time checks are imported by the writers, never the reverse
            assert all(m.startswith("scripts.compiler.") for m in imports), (module, imports)
        if package == "common":
            assert all(m.split(".")[1] in SHARED for m in imports), (module, imports)


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for nxt in graph.get(module, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_dag_imports_only_the_compiler():
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        lines = [line.strip() for line in path.read_text().splitlines()]
        imports = [line for line in lines if re.match(r"(from|import) scripts", line)]
        assert all(line.startswith("from scripts.compiler.") for line in imports), (path.name, imports)


def test_tests_import_no_tests():
    """Shared fixtures live in fixture modules (tests/*_fixtures.py, hub_*.py), not in test modules."""
    offenders = {}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        imported = {m for m in imported_modules(path.read_text()) if m.startswith("tests.test_")}
        if imported:
            offenders[path.name] = sorted(imported)
    assert offenders == {}


def test_the_import_check_catches_a_script_importing_a_script():
    assert step_scripts_imported(imported_modules("from scripts.shard_data import main")) == {"shard_data"}
    assert step_scripts_imported(imported_modules("from scripts import merge_model")) == {"merge_model"}
    assert step_scripts_imported(imported_modules("from scripts.compiler.steps import READS")) == set()


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


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_no_source_file_over_400_lines_and_no_function_over_60():
    """Files small and named after what they do (DESIGN.md section 6): every Python file of the
    scripts, the benches and the tests, and every rule file, entry `main`s included."""
    too_long = {}
    sources = [p for folder in ("scripts", "bench", "tests") for p in (REPO / folder).rglob("*.py")]
    for path in [*sources, REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]:
        text = path.read_text()
        name = str(path.relative_to(REPO))
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long[name] = len(text.splitlines())
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long[f"{name}:{node.name}"] = lines
    assert too_long == {}


def test_the_generated_architecture_page_is_current():
    """docs/architecture.md is rendered from the step, objective, metric and GGUF type tables and the
    stage packages: an edit to any of them without `make docs`
    fails here."""
    assert architecture_page.PAGE.read_text(encoding="utf-8") == architecture_page.render()
