"""Reading a spec file: YAML under bounds (size, aliases, depth, expansion), duplicate keys
refused, scientific notation read as floats, and errors located at their file and line.

Import-light (yaml, stdlib): the Snakefile imports the compiler at DAG-build time.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml


class SpecError(ValueError):
    """A spec problem a user can fix; the message names the file, line, key and the fix."""


# Bounds on what a spec file may make the loader do, checked before any value is built: a
# spec is a page of settings, and nine levels of aliases expand to gigabytes (an "alias bomb").
MAX_SPEC_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64

# YAML 1.1 (PyYAML) reads 3e-4 as a string; we deliberately accept scientific notation as a float.
_SCI_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class _Refused(Exception):
    """A spec refused while composing; `line` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class SpecLoader(yaml.SafeLoader):
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


SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+0123456789."))


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
                            f"{dotted_path([*path, name])}: duplicate key, on lines {first[key.tag, key.value]} "
                            f"and {line} (YAML would silently keep the last); keep one"
                        )
                        errors.append((line, short_message(message)))
                    first.setdefault((key.tag, key.value), line)
                stack.append((value, [*path, name]))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, [*path, i]) for i, item in enumerate(node.value))
    return sorted(errors)


def line_of(node, path: list) -> int | None:
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


def dotted_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


MAX_MESSAGE = 400


def short_message(message: str) -> str:
    """A message cut to MAX_MESSAGE characters: an error never prints a whole large value."""
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 5] + " ..."


def raise_located(path: Path, node, errors) -> None:
    lines = [f"{path}:{line_of(node, where) or 1}: {msg}" for where, msg in errors]
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


def parse_spec(path: Path):
    """(node, value) of a spec file: composed under the loader's bounds, checked for alias
    expansion and duplicate keys, and only then constructed."""
    loader = SpecLoader(_read_text(path))
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
