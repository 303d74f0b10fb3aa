"""Schemas that document (issue 12 item 5): every schema is valid Draft 2020-12, every property of
the manifest and report schemas says what it holds, and file names, `$id`s and `step` consts agree.

Fast (no workflow run): the manifests the scripts actually write are validated by
tests/test_workflow.py and by write_manifest itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from scripts.compiler.steps import RUNTIME_STEPS, STEP_ORDER

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
ALL = sorted(SCHEMAS.rglob("*.schema.json"))
MANIFESTS = sorted((SCHEMAS / "manifests").glob("*.schema.json"))
# The report is part of what the evaluate step writes (its manifest's details $ref it).
DOCUMENTED = [*MANIFESTS, SCHEMAS / "report.schema.json"]
NOT_STEPS = {"common", "environment"}  # the envelope, and the record copied into provenance

# Keywords whose value is one subschema, or a list of them, walked without needing a description
# of their own (the property that holds them has it).
ONE = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
MANY = ("prefixItems", "anyOf", "oneOf", "allOf")
# Keywords whose value maps names to subschemas that each need a description.
NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def stem(path: Path) -> str:
    return path.name.removesuffix(".schema.json")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def undocumented(schema, where: str = "#") -> list[str]:
    """JSON pointers of every named subschema (a property, a $defs entry, at any depth: inside
    items, additionalProperties, anyOf, ...) without a non-empty description."""
    if not isinstance(schema, dict):
        return []
    missing = []
    for keyword in NAMED:
        for name, sub in schema.get(keyword, {}).items():
            here = f"{where}/{keyword}/{name}"
            description = sub.get("description") if isinstance(sub, dict) else None
            if not (isinstance(description, str) and description.strip()):
                missing.append(here)
            missing += undocumented(sub, here)
    for keyword in ONE:
        missing += undocumented(schema.get(keyword), f"{where}/{keyword}")
    for keyword in MANY:
        for index, sub in enumerate(schema.get(keyword, [])):
            missing += undocumented(sub, f"{where}/{keyword}/{index}")
    return missing


def descriptions(schema, where: str = "#"):
    """(pointer, the dict holding it) of every description under a named subschema."""
    if isinstance(schema, dict):
        for keyword in NAMED:
            for name, sub in schema.get(keyword, {}).items():
                here = f"{where}/{keyword}/{name}"
                if isinstance(sub, dict) and "description" in sub:
                    yield here, sub
                yield from descriptions(sub, here)
        for keyword in ONE:
            yield from descriptions(schema.get(keyword), f"{where}/{keyword}")
        for keyword in MANY:
            for index, sub in enumerate(schema.get(keyword, [])):
                yield from descriptions(sub, f"{where}/{keyword}/{index}")


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_schema_passes_the_draft_2020_12_metaschema(path):
    schema = load(path)
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_id_ends_with_the_file_stem(path):
    assert load(path)["$id"].endswith(f":{stem(path)}"), f"{path.name}: $id should end in :{stem(path)}"


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: p.name)
def test_every_property_has_a_description(path):
    schema = load(path)
    assert isinstance(schema.get("description"), str) and schema["description"].strip(), path.name
    assert undocumented(schema) == [], f"{path.name}: properties without a description"


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: p.name)
def test_a_missing_description_is_found_at_any_depth(path):
    """The walk reaches every description: dropping any one of them (or blanking it) is reported
    at exactly its place, so the test above cannot pass over a nested level."""
    schema = load(path)
    places = [pointer for pointer, _ in descriptions(schema)]
    assert places, path.name
    for index, pointer in enumerate(places):
        for broken in (None, "  "):
            copied = copy.deepcopy(schema)
            _, holder = list(descriptions(copied))[index]
            if broken is None:
                del holder["description"]
            else:
                holder["description"] = broken
            assert undocumented(copied) == [pointer]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_file_name_is_the_step(path):
    properties = load(path)["properties"]
    if stem(path) == "common":
        assert "const" not in properties["step"]  # the envelope fits every step
    else:
        assert properties["step"]["const"] == stem(path)


def test_every_step_has_a_manifest_schema():
    assert {stem(p) for p in MANIFESTS} == set(STEP_ORDER) | set(RUNTIME_STEPS) | NOT_STEPS


@pytest.mark.parametrize("path", [p for p in MANIFESTS if stem(p) not in NOT_STEPS], ids=lambda p: p.name)
def test_counts_and_details_are_declared(path):
    """A step schema closes the envelope and declares every count and detail it writes."""
    schema = load(path)
    assert schema["$ref"] == "urn:tunemake:manifest:common"
    assert schema["unevaluatedProperties"] is False
    for field in ("counts", "details"):
        declared = schema["properties"][field]
        assert declared["type"] == "object" and declared["additionalProperties"] is False, field
        assert declared["properties"] and set(declared["required"]) <= set(declared["properties"]), field


def test_audit_checks_are_the_declared_ones():
    """The audit's check names are declared properties wherever a manifest records them."""
    from scripts.data.audit import CHECKS

    manifests = SCHEMAS / "manifests"
    tokenize = load(manifests / "tokenize_shard.schema.json")["properties"]["details"]["properties"]["audit"]
    audit = load(manifests / "audit_data.schema.json")["properties"]
    for declared in (
        tokenize["properties"]["failed"],
        tokenize["properties"]["failed_ids"],
        audit["counts"]["properties"]["failed"],
        audit["details"]["properties"]["failed_ids"],
    ):
        assert set(declared["properties"]) == set(CHECKS)
