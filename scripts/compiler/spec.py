"""Spec compiler: load, validate and expand tunemake specs into runs; their content keys.

Reading a file is spec_yaml.py, checking a section and filling its defaults schema_check.py,
the rules JSON Schema states badly spec_rules.py; this module expands sweeps, links runs that
start from runs, and keys the artifacts. Its names are the compiler's public face (scripts,
rules and tests import them from here).

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

from scripts.compiler.grpo_rules import rewards_file_hashes
from scripts.compiler.hub_sources import HubError, hub_key, resolve_data
from scripts.compiler.schema_check import (  # noqa: F401 (re-exported)
    ROOT,
    SCHEMA_DIR,
    apply_defaults,
    check_slice,
    fill_defaults,
    number_errors,
    schema_errors,
    section_schema,
    validator,
)
from scripts.compiler.spec_rules import cross_section_errors
from scripts.compiler.spec_yaml import SpecError, dotted_path, line_of, parse_spec, raise_located
from scripts.compiler.steps import reference_slice

SECTIONS = ("model", "data", "tokenize", "train", "evaluate", "export")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")  # use fullmatch: `$` matches before "\n"


def canonical_json(value) -> str:
    """The one JSON text of a value: sorted keys, no spaces. Hashes and params use it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def short_hash(value, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of `value`: the content key of an artifact."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def template_file_hash(tokenize: dict) -> str | None:
    """sha256 of the chat template file's text (it is part of the tokens key), or None."""
    file = tokenize.get("chat_template_file")
    if not file or not Path(file).is_file():
        return None
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


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
        raise SpecError(f"{path}:{line_of(node, where)}: {dotted_path(where)}: {exc}") from None


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


OWN_LOCATION = re.compile(r"^[^\s:]+\.py:\d+: ")  # a message that points into a Python file itself


def located(exc: SpecError, path: Path, line: int | None) -> str:
    """A section's error at the section's line of the spec, unless it names its own place (a
    syntax error of a rewards file: `rewards.py:2: SyntaxError: ...`, where an editor jumps)."""
    text = str(exc)
    return text if OWN_LOCATION.match(text) else f"{path}:{line}: {text}"


def load_spec_file(path: str | Path) -> list[Run]:
    """Parse, validate and expand one spec file; raises SpecError naming file, line and key."""
    path = Path(path)
    node, spec = parse_spec(path)
    if not isinstance(spec, dict):
        raise SpecError(f"{path}:1: a spec is a mapping with sections {', '.join(SECTIONS)}")
    errors = schema_errors(spec, "spec.schema.json")
    if errors:
        raise_located(path, node, errors)
    if not RUN_NAME.fullmatch(path.stem):
        raise SpecError(f"{path}: the file name is the run name and must match {RUN_NAME.pattern}")
    runs = []
    for run_name, run_spec, chosen in expand_sweep(path.stem, copy.deepcopy(spec)):
        if not RUN_NAME.fullmatch(run_name) or ".." in run_name:
            raise SpecError(
                f"{path}:{line_of(node, ['sweep'])}: sweep value {chosen} makes the run name "
                f"{run_name!r}, which is not a safe folder name ({RUN_NAME.pattern}, no '..'); "
                "use values without '/', spaces or '..'"
            )
        errors = schema_errors(run_spec, "spec.schema.json")
        if errors:
            msgs = [(w, f"sweep value {chosen}: {m}") for w, m in errors]
            raise_located(path, node, msgs)
        sections = {}
        for section in SECTIONS:
            try:
                sections[section] = check_slice(section, run_spec.get(section, {}))
            except SpecError as exc:
                where = f" (sweep value {chosen})" if chosen else ""
                line = line_of(node, [section])
                raise SpecError(f"{located(exc, path, line)}{where}") from None
        cross = cross_section_errors(sections)
        if cross:
            where = f"sweep value {chosen}: " if chosen else ""
            raise_located(path, node, [(w, where + m) for w, m in cross])
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
