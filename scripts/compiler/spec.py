"""Spec compiler: load, validate and expand tunemake specs; project them onto step slices.

Import-light on purpose (yaml, jsonschema, stdlib): the Snakefile imports this at DAG-build
time, and `snakemake export` with nothing to do must stay fast.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scripts.compiler.grpo_rules import rewards_file_hashes
from scripts.compiler.hub_sources import HubError, hub_key, resolve_data
from scripts.compiler.spec_rules import cross_section_errors, semantic_errors
from scripts.compiler.steps import reference_slice

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
SECTIONS = ("model", "data", "tokenize", "train", "evaluate", "export")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")  # use fullmatch: `$` matches before "\n"
# YAML 1.1 (PyYAML) reads 3e-4 as a string; we deliberately accept scientific notation as a float.
_SCI_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class SpecError(ValueError):
    """A spec problem a user can fix; the message names the file, line, key and the fix."""


# Bounds on what a spec file may make the loader do, checked before any value is built: a
# spec is a page of settings, and nine levels of aliases expand to gigabytes (an "alias bomb").
MAX_SPEC_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64
INT64_MAX = 2**63 - 1


class _Refused(Exception):
    """A spec refused while composing; `line` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that reads `3e-4` as a float, like YAML 1.2 and every other tool does, and
    refuses more than MAX_ALIASES alias uses and nesting deeper than MAX_DEPTH while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_uses = 0
        self.depth = 0

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIASES:
                raise _Refused(
                    mark.line + 1,
                    f"more than {MAX_ALIASES} YAML aliases (*name); a spec may use at most "
                    f"{MAX_ALIASES}: write the values out",
                )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(
                mark.line + 1, f"values nested more than {MAX_DEPTH} levels deep; a spec is not that deep"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+0123456789."))


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root) -> None:
    """Refuse a node graph that aliases make cyclic or expand past MAX_EXPANDED_NODES values.

    Each distinct node is visited once (depth-first, without recursion), so an alias bomb
    costs as much to check as its text; its expanded value is never built or printed."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_EXPANDED_NODES:
                raise _Refused(
                    node.start_mark.line + 1,
                    f"YAML aliases expand the value here to more than {MAX_EXPANDED_NODES} values "
                    f"(an alias bomb); a spec may expand to at most {MAX_EXPANDED_NODES}: write the values out",
                )
        elif key in active:
            raise _Refused(
                node.start_mark.line + 1,
                "the value here contains an alias to itself (a recursive YAML alias); specs cannot be recursive",
            )
        elif key not in sizes:
            active.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _duplicate_keys(root) -> list[tuple[int, str]]:
    """(line, message) of every key given twice in one mapping (PyYAML keeps the last one
    without a word), at the second occurrence's line."""
    errors, seen_nodes, stack = [], set(), [(root, [])]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if (key.tag, key.value) in first:
                        message = (
                            f"{_dotted([*path, name])}: duplicate key, on lines {first[key.tag, key.value]} "
                            f"and {line} (YAML would silently keep the last); keep one"
                        )
                        errors.append((line, _short(message)))
                    first.setdefault((key.tag, key.value), line)
                stack.append((value, [*path, name]))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, [*path, i]) for i, item in enumerate(node.value))
    return sorted(errors)


def _spell_number(value: float) -> str:
    """A non-finite float as YAML writes it."""
    if math.isnan(value):
        return ".nan"
    return ".inf" if value > 0 else "-.inf"


def number_errors(value, prefix: str = "") -> list[tuple[list, str]]:
    """Every non-finite float (NaN, infinity) and every integer beyond 64 bits, anywhere in
    `value`, as (path, message) pairs: JSON Schema's bounds let NaN through (every comparison
    with NaN is false), and no key of a spec means anything with them."""
    errors, stack = [], [([], value)]
    while stack:
        path, item = stack.pop()
        where = _dotted([*([prefix] if prefix else []), *path]) or "(top level)"
        if isinstance(item, dict):
            stack.extend(([*path, k], v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend(([*path, i], v) for i, v in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            errors.append(
                (
                    path,
                    f"{where}: {_spell_number(item)} is not a finite number; every number in a spec must be finite",
                )
            )
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
            errors.append((path, f"{where}: {item} is too large; integers in a spec are at most 2**63-1"))
    return sorted(errors, key=lambda pair: list(map(str, pair[0])))


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


def _load_schema_registry(strict: bool = False):
    """Every schema under schemas/, by $id. `strict`: without their $schema keys, so that a
    $ref keeps the validator class that follows it (jsonschema picks one by $schema)."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry()
    for path in sorted(SCHEMA_DIR.rglob("*.schema.json")):
        schema = json.loads(path.read_text())
        if strict:
            schema.pop("$schema", None)
            resource = DRAFT202012.create_resource(schema)
        else:
            resource = Resource.from_contents(schema)
        registry = registry.with_resource(schema["$id"], resource)
    return registry


_VALIDATORS: dict[str, object] = {}


def validator(schema_name: str):
    """A cached Draft 2020-12 validator for `schemas/<schema_name>` with all $refs resolvable.

    Spec schemas get a stricter one: "integer" means a Python int there (JSON Schema lets
    5.0 and 2e2 through as integers)."""
    if schema_name not in _VALIDATORS:
        from jsonschema import Draft202012Validator, validators

        cls = Draft202012Validator
        schema = json.loads((SCHEMA_DIR / schema_name).read_text())
        strict = schema_name.startswith("spec")
        if strict:
            checker = cls.TYPE_CHECKER.redefine(
                "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
            )
            cls = validators.extend(cls, type_checker=checker)
            schema.pop("$schema", None)
        _VALIDATORS[schema_name] = cls(schema, registry=_load_schema_registry(strict))
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
    if error.validator in ("anyOf", "oneOf") and error.context:
        # e.g. [null, {integer, minimum 1}]: explain the alternative the value was meant for
        meant = [e for e in error.context if e.validator not in ("type", "const")]
        if not meant and isinstance(error.instance, float):
            meant = [
                e for e in error.context if e.validator == "type" and "integer" in str(e.validator_value)
            ]
        if meant:
            return _explain(meant[0], prefix)
    if (
        error.validator == "type"
        and isinstance(error.instance, float)
        and "integer" in str(error.validator_value)
    ):
        value = error.instance
        fix = f"; write {int(value)} (no decimal point or exponent)" if value.is_integer() else ""
        return [(path, f"{where}: expected an integer, got the float {value!r}{fix}")]
    if error.validator == "type" and isinstance(error.instance, str):
        message = f"{where}: expected {error.validator_value}, got the string {error.instance!r}"
        try:
            unquoted = yaml.load(error.instance, Loader=_SpecLoader)
        except yaml.YAMLError:
            unquoted = None
        wanted = (int, float) if "number" in str(error.validator_value) else int
        if isinstance(unquoted, wanted) and not isinstance(unquoted, bool):
            key = where.split(".")[-1]
            message += f"; write the value without quotes (for example {key}: {error.instance})"
        return [(path, message)]
    if error.validator == "enum":
        choices = ", ".join(map(str, error.validator_value))
        guess = difflib.get_close_matches(str(error.instance), map(str, error.validator_value), 1)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        return [(path, f"{where}: {error.instance!r} is not one of: {choices}{hint}")]
    return [(path, f"{where}: {error.message}")]


MAX_MESSAGE = 400


def _short(message: str) -> str:
    """A message cut to MAX_MESSAGE characters: an error never prints a whole large value."""
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 5] + " ..."


def schema_errors(value, schema_name: str, prefix: str = "") -> list:
    """All schema errors of `value`, most specific first, as (path, message) pairs.

    Spec schemas also get `number_errors` (NaN, infinity, huge integers anywhere), first;
    the schema's own errors at those places are dropped, they would only repeat them."""
    numbers = number_errors(value, prefix) if schema_name.startswith("spec") else []
    flagged = [path for path, _ in numbers]
    errors = sorted(
        validator(schema_name).iter_errors(value),
        key=lambda e: (-len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    explained = [pair for e in errors for pair in _explain(e, prefix)]
    explained = [(p, m) for p, m in explained if not any(p[: len(f)] == f for f in flagged)]
    return [(p, _short(m)) for p, m in numbers + explained]


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


def _hub_key(data: dict) -> list | None:
    try:
        return hub_key(data)
    except HubError as exc:
        raise SpecError(f"data.sources[{exc.index}].hub.{exc.key}: {exc}") from None


def check_hub_sources(path: Path, node, data: dict) -> None:
    """Resolve the hub sources (DAG-build time, from the hub cache; see hub_sources.py) and
    refuse one that cannot be, at its spec line."""
    try:
        resolve_data(data)
    except HubError as exc:
        where = ["data", "sources", exc.index, "hub", exc.key]
        raise SpecError(f"{path}:{_line_of(node, where)}: {_dotted(where)}: {exc}") from None


def artifact_keys(sections: dict, parent: dict | None = None) -> dict:
    """Content keys of the shared artifacts: a key changes exactly when its inputs' meaning does.
    `parent`: for model.from_run, the keys and method of the run it starts from (its tuned
    model is this run's base: its train key says what trained it)."""
    hub = _hub_key(sections["data"])  # hub sources: their resolved commits and files' sha256
    data = short_hash({"data": sections["data"]} | ({"hub": hub} if hub else {}))
    model = {"model": sections["model"], "data": data if "build" in sections["model"] else None}
    if "from_run" in sections["model"]:
        model["from"] = parent
    model = short_hash(model)
    # audit settings do not re-tokenize; a template file's text does
    tokenize = {k: v for k, v in sections["tokenize"].items() if k != "audit"}
    if template_file_hash(tokenize):
        tokenize["chat_template_file_sha256"] = template_file_hash(tokenize)
    tokens = short_hash({"tokenize": tokenize, "model": model, "data": data})
    audit = short_hash({"audit": sections["tokenize"].get("audit"), "tokens": tokens})
    reference = short_hash({"reference": reference_slice(sections["train"]), "tokens": tokens})
    train = {"train": sections["train"], "tokens": tokens}
    if rewards_file_hashes(sections["train"]):  # a user reward file's text, like a template file's
        train["rewards_files_sha256"] = rewards_file_hashes(sections["train"])
    train = short_hash(train)
    return {
        "data": data,
        "model": model,
        "tokens": tokens,
        "audit": audit,
        "reference": reference,
        "train": train,
    }


@dataclass
class Run:
    """One compiled run: a name, its source spec file and its validated sections."""

    name: str
    spec_file: str
    sections: dict
    sweep_values: dict = field(default_factory=dict)
    parent: Run | None = None  # the run model.from_run names (resolved by load_specs)

    @property
    def keys(self) -> dict:
        return artifact_keys(self.sections, self.parent_keys())

    def parent_keys(self) -> dict | None:
        """What this run's base depends on when it starts from another run: that run's model
        and train keys and its method (an adapter is merged onto its base, full weights not)."""
        if self.parent is None:
            if "from_run" in self.sections["model"]:
                raise SpecError(
                    f"{self.name}: model.from_run is resolved by load_specs, with the spec that defines it"
                )
            return None
        keys = self.parent.keys
        method = self.parent.sections["train"]["method"]
        return {"model": keys["model"], "train": keys["train"], "method": method}


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


def _read_text(path: Path) -> str:
    """The spec's text; a file over MAX_SPEC_BYTES is refused before it is parsed."""
    try:
        with open(path, "rb") as handle:
            size = Path(handle.name).stat().st_size
            data = handle.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: the spec is {max(size, len(data))} bytes, over the limit of {MAX_SPEC_BYTES} "
                f"bytes ({MAX_SPEC_BYTES >> 20} MiB); a spec holds settings: keep data in data files"
            )
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc}") from None


def _parse(path: Path):
    """(node, value) of a spec file: composed under the loader's bounds, checked for alias
    expansion and duplicate keys, and only then constructed."""
    loader = _SpecLoader(_read_text(path))
    loader.name = str(path)  # YAML errors say `in "specs/x.yaml", line 2`
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        duplicates = _duplicate_keys(node) if node is not None else []
        if duplicates:
            raise SpecError("\n".join(f"{path}:{line}: {message}" for line, message in duplicates))
        return node, (loader.construct_document(node) if node is not None else None)
    except _Refused as exc:
        raise SpecError(f"{path}:{exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_spec_file(path: str | Path) -> list[Run]:
    """Parse, validate and expand one spec file; raises SpecError naming file, line and key."""
    path = Path(path)
    node, spec = _parse(path)
    if not isinstance(spec, dict):
        raise SpecError(f"{path}:1: a spec is a mapping with sections {', '.join(SECTIONS)}")
    errors = schema_errors(spec, "spec.schema.json")
    if errors:
        _raise_located(path, node, errors)
    if not RUN_NAME.fullmatch(path.stem):
        raise SpecError(f"{path}: the file name is the run name and must match {RUN_NAME.pattern}")
    runs = []
    for run_name, run_spec, chosen in expand_sweep(path.stem, copy.deepcopy(spec)):
        if not RUN_NAME.fullmatch(run_name) or ".." in run_name:
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
        check_hub_sources(path, node, sections["data"])
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
    resolve_from_runs(runs, [str(p) for p in paths])
    return runs


def resolve_from_runs(runs: list[Run], paths: list[str]) -> None:
    """Link each model.from_run to the run it names; unknown names (with did-you-mean), a run
    that starts from itself and cycles are refused."""
    by_name = {run.name: run for run in runs}
    for run in runs:
        name = run.sections["model"].get("from_run")
        if name is None:
            continue
        if name not in by_name:
            guess = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            raise SpecError(
                f"{run.spec_file}: model.from_run: no run named {name!r} among the specs loaded "
                f"({', '.join(sorted(set(paths)))}); {hint}name a run of these specs (a spec file's "
                "name, or a sweep run's full name as `snakemake why` prints it), or load the spec "
                "that defines it too (--config specs=a.yaml,b.yaml)"
            )
        run.parent = by_name[name]
    for run in runs:
        chain, node = [run.name], run.parent
        while node is not None and node.name not in chain[1:]:
            chain.append(node.name)
            if node is run:
                raise SpecError(
                    f"{run.spec_file}: model.from_run makes a cycle: {' -> '.join(chain)}; a run "
                    "can only start from a run that does not start from it"
                )
            node = node.parent
