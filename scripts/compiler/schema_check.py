"""Checking a spec against its JSON Schemas: readable errors (did-you-mean, the fix), numbers
JSON Schema lets through (NaN, huge integers), and every default filled, the settings blocks
the objective and the method imply included (objectives.py), so equal meanings hash equal.

Import-light (jsonschema, stdlib): the Snakefile imports the compiler at DAG-build time.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from pathlib import Path

import yaml

from scripts.compiler.objectives import implied_blocks
from scripts.compiler.spec_rules import semantic_errors
from scripts.compiler.spec_yaml import SpecError, SpecLoader, dotted_path, short_message

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
INT64_MAX = 2**63 - 1


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
        where = dotted_path([*([prefix] if prefix else []), *path]) or "(top level)"
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


def _explain(error, prefix: str = "") -> list[tuple[list, str]]:
    """Readable (path, sentence) pairs for a jsonschema error; did-you-mean for unknown keys."""
    path = list(error.absolute_path)
    where = dotted_path([*([prefix] if prefix else []), *path]) or "(top level)"
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
            unquoted = yaml.load(error.instance, Loader=SpecLoader)
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
    return [(p, short_message(m)) for p, m in numbers + explained]


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


def section_schema(section: str) -> dict:
    return json.loads((SCHEMA_DIR / "spec" / f"{section}.schema.json").read_text())


def fill_defaults(section: str, value: dict) -> dict:
    """A copy of a valid section with every schema default filled, and for the train section
    the settings blocks its objective and method imply (`dpo` for objective dpo, `qlora` for
    method qlora; a block with required keys, such as grpo's rewards, is left to the user)."""
    schema = section_schema(section)
    value = apply_defaults(copy.deepcopy(value), schema)
    if section == "train":
        for block in implied_blocks(value):
            sub = schema["properties"][block]
            if block not in value and not sub.get("required"):
                value[block] = apply_defaults({}, sub)
    return value


def check_slice(section: str, value) -> dict:
    """Validate one section and fill its defaults (scripts call this on entry too)."""
    errors = [m for _, m in schema_errors(value, f"spec/{section}.schema.json", prefix=section)]
    if not errors:
        value = fill_defaults(section, value)
        errors = semantic_errors(section, value)
    if errors:
        raise SpecError("\n".join(errors))
    return value
