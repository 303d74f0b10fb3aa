"""The reward terms of train.grpo.rewards as data: their names, the files of user reward
functions (whose text is part of the train key) and the rules the schema states badly, each
message with its fix. Stdlib only: the spec compiler imports this at DAG-build time, and no
user code runs here (a rewards file is parsed, not imported).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import re
from pathlib import Path

KINDS = ("metric", "regex", "length_penalty", "function")
# term option -> the metric it belongs to
OPTIONS = {
    "ignore_case": "exact_match",
    "ignore_punctuation": "exact_match",
    "extract_regex": "accuracy",
    "rouge_type": "rouge",
    "word_order": "chrf",
}
DEFAULT_NAME = {"regex": "format", "length_penalty": "length_penalty"}


def kind_of(term: dict) -> str:
    """Which of KINDS a (valid) term is."""
    return next(kind for kind in KINDS if kind in term)


def term_names(terms: list[dict]) -> list[str]:
    """The log name of each term (rewards/<name>/mean): its `name`, else its metric, `format`,
    `length_penalty` or its function's name; repeats get _2, _3... in order."""
    names, seen = [], {}
    for term in terms:
        kind = kind_of(term)
        base = term.get("name") or DEFAULT_NAME.get(kind) or term[kind]
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def rewards_files(train: dict) -> list[str]:
    """The user reward files a train slice names, sorted, each once."""
    terms = (train.get("grpo") or {}).get("rewards") or []
    return sorted({t["rewards_file"] for t in terms if t.get("rewards_file")})


def rewards_file_hashes(train: dict) -> dict[str, str]:
    """sha256 of each user reward file's text (part of the train key): an edit retrains."""
    return {
        path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for path in rewards_files(train)
        if Path(path).is_file()
    }


def _regex_error(where: str, pattern: str) -> list[str]:
    try:
        re.compile(pattern)
    except re.error as exc:
        return [f"{where}: {pattern!r} is not a valid regex: {exc}; fix the pattern"]
    return []


def top_level_functions(path: Path) -> list[str]:
    """Names of the functions defined at the top level of a Python file (parsed, not run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return [node.name for node in tree.body if isinstance(node, kinds)]


def _function_errors(where: str, term: dict) -> list[str]:
    file = term.get("rewards_file")
    if not file:
        return [
            f"{where}.rewards_file: function {term['function']!r} needs the file that defines it; add rewards_file: path.py"
        ]
    path = Path(file)
    if path.is_absolute() or ".." in path.parts:
        return [f"{where}.rewards_file: {file!r} must be a relative path inside the workflow folder"]
    if not path.is_file():
        return [f"{where}.rewards_file: {file!r} not found (relative to the workflow folder)"]
    try:
        defined = top_level_functions(path)
    except SyntaxError as exc:  # at the file's own line (an editor jumps there), with that line
        code = (exc.text or "").strip()
        shown = f" in {code!r}" if code else ""
        return [
            f"{file}:{exc.lineno}: {type(exc).__name__}: {exc.msg}{shown}; fix the Python "
            f"({where}.rewards_file)"
        ]
    except (UnicodeDecodeError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        return [
            f"{where}.rewards_file: {file!r} is not valid Python{f' (line {line})' if line else ''}: {exc}"
        ]
    if term["function"] not in defined:
        close = difflib.get_close_matches(term["function"], defined, n=1)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else f" (it defines {', '.join(defined) or 'no function'})"
        )
        return [f"{where}.function: {term['function']!r} is not defined at the top level of {file!r}{hint}"]
    return []


def term_errors(index: int, term: dict) -> list[str]:
    """One reward term: exactly one kind, options only with their metric, regexes that compile,
    a user function that its file defines."""
    where = f"train.grpo.rewards[{index}]"
    kinds = [kind for kind in KINDS if kind in term]
    if len(kinds) != 1:
        return [
            f"{where}: give exactly one of metric (exact_match, accuracy, rouge, chrf), regex (a format "
            f"check), length_penalty or function (with rewards_file); got {kinds or 'none'}"
        ]
    errors = []
    for option, metric in OPTIONS.items():
        if option in term and term.get("metric") != metric:
            errors.append(
                f"{where}.{option}: applies to metric {metric} only; remove it or set metric: {metric}"
            )
    if "rewards_file" in term and kinds != ["function"]:
        errors.append(f"{where}.rewards_file: goes with function only; remove it or add function: <name>")
    if "regex" in term:
        errors += _regex_error(f"{where}.regex", term["regex"])
    if "extract_regex" in term:
        errors += _regex_error(f"{where}.extract_regex", term["extract_regex"])
    if "function" in term:
        errors += _function_errors(where, term)
    return errors


def grpo_errors(train: dict) -> list[str]:
    """The rules of train.grpo alone (the record shapes are checked in spec_rules)."""
    grpo = train.get("grpo")
    if train["objective"] != "grpo" or grpo is None:
        return []
    errors = [e for i, term in enumerate(grpo["rewards"]) for e in term_errors(i, term)]
    if errors:
        return errors
    names = term_names(grpo["rewards"])
    given = [t["name"] for t in grpo["rewards"] if "name" in t]
    clash = sorted({n for n in given if given.count(n) > 1 or names.count(n) > 1})
    if clash:
        errors.append(
            f"train.grpo.rewards: the name {clash[0]!r} is given to two terms; give each a different name"
        )
    completions = train["per_device_batch_size"] * train["gradient_accumulation_steps"]
    completions = train.get("global_batch_size") or completions
    if completions % grpo["num_generations"]:
        errors.append(
            f"train.grpo.num_generations: a batch of {completions} completions (per_device_batch_size x "
            f"gradient_accumulation_steps) does not hold whole groups of {grpo['num_generations']}; make the "
            "batch a multiple of num_generations"
        )
    return errors
