"""The Ollama Modelfile of a GGUF export: FROM, a TEMPLATE that renders the training format,
PARAMETER stop for the end tokens, and the chat sources' system message.

Ollama templates are Go templates, the training template is Jinja. A chat template is turned into
a Go template by rendering it with marked messages and reading off each role's prefix and suffix;
the result is checked by rendering both on sample conversations (`render_go` implements the part
of Go's text/template the generated templates use), and refused when they differ. Data without a
chat template trains on the raw prompt (BOS, prompt, completion, EOS): the template is the prompt.
"""

from __future__ import annotations

import json
import re

from scripts.compiler.gguf_rules import GGUFError, modelfile_quote_error

RAW_TEMPLATE = "{{ .Prompt }}"
ROLES = ("system", "user", "assistant")
_MARK = "\x00{}\x00"


def render_jinja(template: str, messages: list[dict], special: dict, add_generation_prompt: bool) -> str:
    """The chat template rendered as training rendered it (scripts.common.chat's sandbox)."""
    from scripts.common.chat import compile_template, render

    return render(compile_template(template), messages, special, add_generation_prompt)


def _pieces(template: str, messages: list[dict], special: dict, gen: bool = False) -> str:
    return render_jinja(template, messages, special, gen)


def _affixes(template: str, role: str, special: dict, before: list[dict]) -> tuple[str, str]:
    """(prefix, suffix) the template writes around a `role` message that follows `before`."""
    head = _pieces(template, before, special) if before else ""
    text = _pieces(template, before + [{"role": role, "content": _MARK.format(role)}], special)
    if not text.startswith(head) or text.count(_MARK.format(role)) != 1:
        raise GGUFError(f"export.gguf: the chat template's {role} turn depends on the turns before it")
    prefix, _, suffix = text[len(head) :].partition(_MARK.format(role))
    return prefix, suffix


def _go_string(text: str) -> str:
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def leading_bos(template: str, special: dict) -> str:
    """The BOS text the template writes once before the turns (`{{ bos_token }}` first, as Llama
    3 does, or on the first message), else "". go_template derives the turns without it and
    checks that BOS appears nowhere else."""
    bos = special.get("bos_token")
    first = render_jinja(template, [{"role": "user", "content": "u"}], special, False)
    return bos if bos and first.startswith(bos) else ""


def go_template(template: str, special: dict, add_bos: bool = True) -> tuple[str, str]:
    """(a Go (Ollama) template equivalent to the Jinja chat template, the text that ends an
    assistant turn), or GGUFError. A BOS the template writes first is left to llama.cpp and
    Ollama, which add it themselves where the tokenizer does (`add_bos`, the GGUF's
    add_bos_token), else written once before the turns."""
    bos = leading_bos(template, special)
    trained, special = special, {**special, "bos_token": ""} if bos else special
    user = {"role": "user", "content": "u"}
    parts = []
    try:
        system = _affixes(template, "system", special, [])
    except Exception:  # templates that reject a system turn: the Go template has none either
        system = None
    affixes = {
        "user": _affixes(template, "user", special, []),
        "assistant": _affixes(template, "assistant", special, [user]),
    }
    if system is not None:
        affixes["system"] = system
    for role in ROLES:
        if role in affixes:
            prefix, suffix = affixes[role]
            keyword = "if" if not parts else "else if"
            parts.append(
                f'{{{{ {keyword} eq .Role "{role}" }}}}{_go_string(prefix)}{{{{ .Content }}}}{_go_string(suffix)}'
            )
    without = _pieces(template, [user], special)
    generation = _pieces(template, [user], special, gen=True)[len(without) :]
    lead = "" if add_bos else _go_string(bos)
    result = lead + "{{ range .Messages }}" + "".join(parts) + "{{ end }}{{ end }}" + _go_string(generation)
    added = bos if add_bos else ""  # what the runtime puts first
    for conversation in sample_conversations(system is not None):
        want = render_jinja(template, conversation, trained, True)
        if added + render_go(result, {"Messages": conversation}) != want:
            raise GGUFError(
                "export.gguf: the chat template cannot be written as an Ollama template "
                "(its turns depend on their position); the GGUF still carries it"
            )
    return result, affixes["assistant"][1].strip()


def sample_conversations(with_system: bool) -> list[list[dict]]:
    turns = [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Hi.\nYes"},
        {"role": "user", "content": "Spell 12:"},
    ]
    system = [{"role": "system", "content": "Be brief."}] if with_system else []
    return [turns[:1], turns, system + turns]


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_go(template: str, data: dict) -> str:
    """Render the subset of Go's text/template that Modelfile templates use here: string
    literals, .Prompt/.System/.Content/.Role, `range .Messages`, `if`/`else if`/`else` with a
    field or `eq .Role "x"`, and `{{-`/`-}}` trimming. Anything else raises ValueError."""
    tokens, pos = [], 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if tokens and tokens[-1][0] == "trim":
            tokens.pop()
            text = text.lstrip()
        tokens.append(("text", text))
        tokens.append(("action", match.group(2)))
        if match.group(3):
            tokens.append(("trim", ""))
        pos = match.end()
    tail = template[pos:]
    if tokens and tokens[-1][0] == "trim":
        tokens.pop()
        tail = tail.lstrip()
    tokens.append(("text", tail))
    out, _ = _run(tokens, 0, [data], emit=True)
    return out


def _value(expr: str, scopes: list[dict]):
    if expr.startswith('"'):
        return json.loads(expr)
    if expr.startswith("."):  # Ollama's fields are capitalised; the Jinja messages' keys are not
        name = expr[1:]
        for scope in (scopes[-1], scopes[0]):
            for key in (name, name.lower()):
                if key in scope:
                    return scope[key]
        return ""
    raise ValueError(f"unsupported Go template expression {expr!r}")


def _test(expr: str, scopes: list[dict]) -> bool:
    if expr.startswith("eq "):
        left, right = re.match(r'eq\s+(\S+)\s+(".*")$', expr).groups()
        return _value(left, scopes) == json.loads(right)
    return bool(_value(expr, scopes))


def _run(tokens, i, scopes, emit) -> tuple[str, int]:
    """Render tokens from i to the matching `end`/`else` (or the end); returns (text, index)."""
    out = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            out.append(body if emit else "")
            i += 1
        elif body == "end" or body.startswith("else"):
            return "".join(out), i
        elif body.startswith("range "):
            items = _value(body[6:], scopes) or []
            start, end = i + 1, None
            for item in items:
                text, end = _run(tokens, start, scopes + [item], emit)
                out.append(text)
            if end is None:
                _, end = _run(tokens, start, scopes, False)
            i = end + 1
        elif body.startswith("if "):
            taken, cond = False, _test(body[3:], scopes)
            i += 1
            while True:
                text, i = _run(tokens, i, scopes, emit and cond and not taken)
                out.append(text if cond and not taken else "")
                taken = taken or cond
                head = tokens[i][1]
                i += 1
                if head == "end":
                    break
                cond = True if head == "else" else _test(head[len("else if ") :], scopes)
        else:
            out.append(str(_value(body, scopes)) if emit else "")
            i += 1
    return "".join(out), i


def modelfile(gguf_name: str, template: str, stops: list[str], system: str | None) -> str:
    """The Modelfile text; FROM is relative to the Modelfile's folder. Values are triple-quoted
    (Ollama reads three quotes inside one back as is, except at the end of a line)."""
    for name, text in (("TEMPLATE", template), ("SYSTEM", system or "")):
        reason = modelfile_quote_error(text)
        if reason:
            raise GGUFError(f"export.gguf: the Modelfile's {name} {reason}")
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
