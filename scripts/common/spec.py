"""Spec compiler: load, validate and expand tunemake specs; project them onto step slices.

Import-light on purpose (yaml, jsonschema, stdlib): the Snakefile imports this at DAG-build
time, and `snakemake export` with nothing to do must stay fast.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scripts.common.spec_rules import cross_section_errors, semantic_errors

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
SECTIONS = ("model", "data", "tokenize", "train", "evaluate", "export")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")
# YAML 1.1 (PyYAML) reads 3e-4 as a string; we deliberately accept scientific notation as a float.
_SCI_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class SpecError(ValueError):
    """A spec problem a user can fix; the message names the file, line, key and the fix."""


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that reads `3e-4` as a float, like YAML 1.2 and every other tool does."""


_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+0123456789."))


def canonical_json(value) -> str:
    """The one JSON text of a value: sorted keys, no spaces. Hashes and params use it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def short_hash(value, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of `value`: the content key of an artifact."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def _line_of(node, path: list) -> int | None:
    """Line (1-based) of the YAML node at `path` (keys and list indices), or its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == part]
            key = [k for k, v in node.value if k.value == part]
            if not match:
                return line
            line, node = key[0].start_mark.line + 1, match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _load_schema_registry():
    from referencing import Registry, Resource

    registry = Registry()
    for path in sorted(SCHEMA_DIR.rglob("*.schema.json")):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry


_VALIDATORS: dict[str, object] = {}


def validator(schema_name: str):
    """A cached Draft 2020-12 validator for `schemas/<schema_name>` with all $refs resolvable."""
    if schema_name not in _VALIDATORS:
        from jsonschema import Draft202012Validator

        schema = json.loads((SCHEMA_DIR / schema_name).read_text())
        _VALIDATORS[schema_name] = Draft202012Validator(schema, registry=_load_schema_registry())
    return _VALIDATORS[schema_name]


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _explain(error, prefix: str = "") -> list[tuple[list, str]]:
    """Readable (path, sentence) pairs for a jsonschema error; did-you-mean for unknown keys."""
    path = list(error.absolute_path)
    where = _dotted([*([prefix] if prefix else []), *path]) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        out = []
        for key in sorted(set(error.instance) - set(allowed)):
            guess = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{guess[0]}'?" if guess else f"allowed keys: {', '.join(allowed)}"
            name = key if where == "(top level)" else f"{where}.{key}"
            out.append(([*path, key], f"{name}: unknown key; {hint}"))
        return out
    if error.validator == "type" and isinstance(error.instance, str):
        example = f"{where.split('.')[-1]}: 3e-4" if "number" in str(error.validator_value) else "no quotes"
        return [
            (
                path,
                f"{where}: expected {error.validator_value}, got the string {error.instance!r}; "
                f"write the value without quotes (for example {example})",
            )
        ]
    if error.validator == "enum":
        choices = ", ".join(map(str, error.validator_value))
        guess = difflib.get_close_matches(str(error.instance), map(str, error.validator_value), 1)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        return [(path, f"{where}: {error.instance!r} is not one of: {choices}{hint}")]
    return [(path, f"{where}: {error.message}")]


def schema_errors(value, schema_name: str, prefix: str = "") -> list:
    """All schema errors of `value`, most specific first, as (path, message) pairs."""
    errors = sorted(
        validator(schema_name).iter_errors(value),
        key=lambda e: (-len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    return [pair for e in errors for pair in _explain(e, prefix)]


def apply_defaults(value, schema: dict):
    """Fill every missing property that has a schema default, so equal meaning hashes equal."""
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    for key, sub in schema["properties"].items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            apply_defaults(value[key], sub)
    return value


def template_file_hash(tokenize: dict) -> str | None:
    """sha256 of the chat template file's text (it is part of the tokens key), or None."""
    file = tokenize.get("chat_template_file")
    if not file or not Path(file).is_file():
        return None
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def section_schema(section: str) -> dict:
    return json.loads((SCHEMA_DIR / "spec" / f"{section}.schema.json").read_text())


def check_slice(section: str, value) -> dict:
    """Validate one section and fill its defaults (scripts call this on entry too)."""
    errors = [m for _, m in schema_errors(value, f"spec/{section}.schema.json", prefix=section)]
    if not errors:
        value = apply_defaults(copy.deepcopy(value), section_schema(section))
        errors = semantic_errors(section, value)
    if errors:
        raise SpecError("\n".join(errors))
    return value


def artifact_keys(sections: dict) -> dict:
    """Content keys of the shared artifacts: a key changes exactly when its inputs' meaning does."""
    data = short_hash({"data": sections["data"]})
    model = short_hash({"model": sections["model"], "data": data if "build" in sections["model"] else None})
    # audit settings do not re-tokenize; a template file's text does
    tokenize = {k: v for k, v in sections["tokenize"].items() if k != "audit"}
    if template_file_hash(tokenize):
        tokenize["chat_template_file_sha256"] = template_file_hash(tokenize)
    tokens = short_hash({"tokenize": tokenize, "model": model, "data": data})
    train = short_hash({"train": sections["train"], "tokens": tokens})
    return {"data": data, "model": model, "tokens": tokens, "train": train}


@dataclass
class Run:
    """One compiled run: a name, its source spec file and its validated sections."""

    name: str
    spec_file: str
    sections: dict
    sweep_values: dict = field(default_factory=dict)

    @property
    def keys(self) -> dict:
        return artifact_keys(self.sections)


def _apply_dotted(spec: dict, dotted: str, value) -> None:
    node = spec
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _format_value(value) -> str:
    """A sweep value as it appears in a run name (lists join with '+')."""
    if isinstance(value, list):
        return "+".join(map(_format_value, value))
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def expand_sweep(name: str, spec: dict) -> list[tuple[str, dict, dict]]:
    """The runs of one spec: itself, or one per combination of its `sweep:` values."""
    sweep = spec.pop("sweep", None) or {}
    runs = [(name, spec, {})]
    for dotted, values in sweep.items():
        expanded = []
        for run_name, run_spec, chosen in runs:
            for value in values:
                new = copy.deepcopy(run_spec)
                _apply_dotted(new, dotted, value)
                label = f"{run_name}--{dotted}={_format_value(value)}"
                expanded.append((label, new, {**chosen, dotted: value}))
        runs = expanded
    return runs


def _raise_located(path: Path, node, errors) -> None:
    lines = [f"{path}:{_line_of(node, where) or 1}: {msg}" for where, msg in errors]
    raise SpecError("\n".join(lines))


def load_spec_file(path: str | Path) -> list[Run]:
    """Parse, validate and expand one spec file; raises SpecError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=_SpecLoader)
        spec = yaml.load(text, Loader=_SpecLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}:1: a spec is a mapping with sections {', '.join(SECTIONS)}")
    errors = schema_errors(spec, "spec.schema.json")
    if errors:
        _raise_located(path, node, errors)
    if not RUN_NAME.match(path.stem):
        raise SpecError(f"{path}: the file name is the run name and must match {RUN_NAME.pattern}")
    runs = []
    for run_name, run_spec, chosen in expand_sweep(path.stem, copy.deepcopy(spec)):
        if not RUN_NAME.match(run_name) or ".." in run_name:
            raise SpecError(
                f"{path}:{_line_of(node, ['sweep'])}: sweep value {chosen} makes the run name "
                f"{run_name!r}, which is not a safe folder name ({RUN_NAME.pattern}, no '..'); "
                "use values without '/', spaces or '..'"
            )
        errors = schema_errors(run_spec, "spec.schema.json")
        if errors:
            msgs = [(w, f"sweep value {chosen}: {m}") for w, m in errors]
            _raise_located(path, node, msgs)
        sections = {}
        for section in SECTIONS:
            try:
                sections[section] = check_slice(section, run_spec.get(section, {}))
            except SpecError as exc:
                where = f" (sweep value {chosen})" if chosen else ""
                line = _line_of(node, [section])
                raise SpecError(f"{path}:{line}: {exc}{where}") from None
        cross = cross_section_errors(sections)
        if cross:
            where = f"sweep value {chosen}: " if chosen else ""
            _raise_located(path, node, [(w, where + m) for w, m in cross])
        runs.append(Run(run_name, str(path), sections, chosen))
    return runs


def load_specs(paths) -> list[Run]:
    """All runs of all spec files; run names must be unique."""
    runs: list[Run] = []
    for path in sorted(map(str, paths)):
        runs.extend(load_spec_file(path))
    seen: dict[str, str] = {}
    for run in runs:
        if run.name in seen:
            raise SpecError(f"run name {run.name!r} comes from both {seen[run.name]} and {run.spec_file}")
        seen[run.name] = run.spec_file
    return runs
