"""Tokenizers and chat templates without transformers: fast to import, batched, exact masks.

`load_tokenizer_files` reads the base model folder's `tokenizer.json` with the `tokenizers`
library (the same Rust tokenizer transformers wraps; a test checks the ids agree) and falls
back to transformers for folders without one. `chat_segments` renders a conversation with a
Jinja chat template (the same sandbox settings as transformers) and cuts it into spans that
are trained on (assistant turns, up to and including their end-of-turn tokens) or not. Each
rendering has a budget of steps and sizes (see STEP_LIMIT), so a runaway template fails fast,
and a template that fails raises a TemplateError naming it, its line and the reason.
`tokens_chat_template` finds the template token shards were rendered with, which training
saves with its tokenizer so that every exported folder carries it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from scripts.compiler.steps import manifest_of


class TemplateError(ValueError):
    """A chat template that cannot be used; the message says why and what to change."""


@dataclass
class TokenizerFiles:
    encode: object  # (texts, add_special_tokens) -> list[list[int]]
    decode: object  # ids -> text, special tokens kept
    special: dict  # bos_token, eos_token, pad_token, unk_token -> text or None
    ids: dict  # the same names -> id or None
    chat_template: str | None
    chat_template_source: str | None = None  # the file (and key) it came from, for messages


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value


def _own_template(folder: Path, config: dict) -> tuple[str | None, str | None]:
    """(the tokenizer's chat template, where it is) or (None, None)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8"), str(
            folder / "chat_template.jinja"
        )
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template, (f"chat_template in {folder / 'tokenizer_config.json'}" if template else None)


def load_tokenizer_files(folder) -> TokenizerFiles:
    folder = Path(folder)
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            config |= json.loads((folder / name).read_text(encoding="utf-8"))
    names = ("bos_token", "eos_token", "pad_token", "unk_token")
    special = {name: _token_text(config.get(name)) for name in names}
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))

        def encode(texts, add_special_tokens=True):
            encoded = backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)
            return [e.ids for e in encoded]

        def decode(ids):
            return backend.decode(list(ids), skip_special_tokens=False)

        ids = {name: backend.token_to_id(text) if text else None for name, text in special.items()}
    else:  # sentencepiece-only folders: the slow path, same ids
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))

        def encode(texts, add_special_tokens=True):
            return tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]

        def decode(ids):
            return tokenizer.decode(list(ids), skip_special_tokens=False)

        special = {name: getattr(tokenizer, name) for name in names}
        ids = {
            name: tokenizer.convert_tokens_to_ids(text) if text else None for name, text in special.items()
        }
    return TokenizerFiles(encode, decode, special, ids, *_own_template(folder, config))


# What one rendering (one call of `render`) may do: STEP_LIMIT loop iterations, calls and filter
# calls, plus STEPS_PER_MESSAGE per message and the number of messages squared (a template that
# loops over the messages for each message still works); values and output of at most SIZE_LIMIT
# characters or items, plus SIZE_PER_CHAR per character of the conversation. Normal templates
# take a few steps per message (2 for ChatML and Llama 3) and output about the conversation's
# size; a runaway one is stopped within about a second, the same way on every machine.
STEP_LIMIT, STEPS_PER_MESSAGE = 1 << 18, 64
SIZE_LIMIT, SIZE_PER_CHAR = 1 << 24, 16
INT_BITS_LIMIT = 1 << 16  # integers made by * and ** (Python's C loops cannot be interrupted)
_FORMAT_WIDTHS = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d*))?|\{[^{}]*?:[^{}]*?(\d+)(?:\.(\d+))?[^{}]*\}")


_SIZED = (str, list, tuple, dict)


class RenderLimit(Exception):
    """Raised inside a rendering that went past its budget; render() reports it."""


class _Raised(Exception):
    """The template called raise_exception(message)."""


class _Budget:
    """The steps and sizes one rendering may use (see STEP_LIMIT); a fresh one per rendering."""

    def __init__(self, variables=None):
        messages = (variables or {}).get("messages")
        self.messages = messages if isinstance(messages, list) else []
        count = len(self.messages)
        self.steps = self.step_limit = STEP_LIMIT + STEPS_PER_MESSAGE * count + count * count
        self._size = None

    @property
    def size(self) -> int:
        """The size limit; counting the conversation's characters waits until a value needs it."""
        if self._size is None:
            chars = sum(len(str(v)) for m in self.messages if isinstance(m, dict) for v in m.values())
            self._size = SIZE_LIMIT + SIZE_PER_CHAR * chars
        return self._size

    def step(self, count: int = 1):
        self.steps -= count
        if self.steps < 0:
            raise RenderLimit(
                f"it needs more than {self.step_limit:,} steps (loop iterations, calls, filters) for a "
                f"conversation of {len(self.messages)} messages; a chat template's work should grow with "
                "the conversation: look for nested loops or a loop over range()"
            )

    def iterate(self, items):
        try:
            self.step(len(items))
        except TypeError:  # a generator (a filter's output): count as it goes
            return self._counted(items)
        return items

    def _counted(self, items):
        for item in items:
            self.step()
            yield item

    def sized(self, value):
        """The value, if it is no bigger than the size limit (callers inline the cheap first test)."""
        if isinstance(value, _SIZED) and len(value) > SIZE_LIMIT and len(value) > self.size:
            raise RenderLimit(
                f"it made a value of {len(value):,} characters or items (at most {self.size:,})"
            )
        return value

    def check_ints(self, args, kwargs=None):
        """Width-like arguments (ljust, center, indent, a '%*d' width) that would build a huge string."""
        for value in [*args, *(kwargs or {}).values()]:
            if isinstance(value, int) and abs(value) > SIZE_LIMIT and abs(value) > self.size:
                raise RenderLimit(f"it asked for a string width of {value:,} (at most {self.size:,})")

    def check_format(self, text: str, args=(), kwargs=None):
        """Widths and precisions in a %- or {}-format string, and in its arguments where the
        string takes them from there ('%*d', '{:{}}')."""
        for match in _FORMAT_WIDTHS.finditer(text):
            self.check_ints([int(n) for n in match.groups() if n])
        if "*" in text or ":{" in text:
            self.check_ints(args if isinstance(args, (tuple, list)) else (args,), kwargs)


@functools.cache
def _jinja():
    """The bounded sandbox's classes, built on first use (Jinja is imported only by steps that render)."""
    from jinja2 import Template, nodes, pass_context
    from jinja2.ext import loopcontrols
    from jinja2.runtime import LoopContext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.visitor import NodeTransformer

    class Counting(NodeTransformer):
        """Every `for` loop charges its items, every `~` checks the size of what it makes: both go
        through filters whose names (with a space) no template can write, marked pass_context so
        that Jinja never folds them at compile time."""

        def visit_For(self, node):
            node = self.generic_visit(node)
            node.iter = nodes.Filter(node.iter, "tunemake loop", [], [], None, None).set_lineno(node.lineno)
            return node

        def visit_Concat(self, node):
            first, *rest = self.generic_visit(node).nodes
            return nodes.Filter(first, "tunemake concat", rest, [], None, None).set_lineno(node.lineno)

    class BoundedTemplate(Template):
        def new_context(self, vars=None, shared=False, locals=None):  # noqa: A002 - Jinja's names
            self.environment.budget = _Budget(vars)  # every rendering starts afresh
            return super().new_context(vars, shared, locals)

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """transformers' sandbox, plus a budget: steps (loop items, calls, filters) and sizes."""

        intercepted_binops = frozenset({"*", "**", "+", "%"})  # also keeps them from constant folding
        template_class = BoundedTemplate

        def __init__(self):
            super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            self.budget = _Budget()
            self.filters = {name: self.bounded_filter(name, f) for name, f in self.filters.items()}
            self.filters["tunemake loop"] = pass_context(lambda _, items: self.budget.iterate(items))
            self.filters["tunemake concat"] = pass_context(
                lambda _, *parts: self.budget.sized("".join(map(str, parts)))
            )

        def bounded_filter(self, name, func):
            skip = 2 if hasattr(func, "jinja_pass_arg") else 1  # the context and/or the value

            @functools.wraps(func)  # keeps Jinja's pass_context marks
            def bounded(*args, **kwargs):
                budget = self.budget
                budget.step()
                if name == "format":
                    budget.check_format(str(args[skip - 1]), args[skip:], kwargs)
                elif len(args) > skip or kwargs:
                    budget.check_ints(args[skip:], kwargs)
                value = func(*args, **kwargs)
                return budget.sized(value) if isinstance(value, _SIZED) and len(value) > SIZE_LIMIT else value

            return bounded

        def call(self, context, obj, /, *args, **kwargs):
            self.budget.step()
            target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
            owner = getattr(target, "__self__", None)
            if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
                args = (self.budget.iterate(args[0]), *args[1:])
            elif isinstance(owner, str):
                if getattr(target, "__name__", "") in ("format", "format_map"):
                    self.budget.check_format(owner, args, kwargs)
                else:
                    self.budget.check_ints(args, kwargs)
            return self.budget.sized(super().call(context, obj, *args, **kwargs))

        def call_binop(self, context, operator, left, right):
            budget = self.budget
            if operator == "+":  # the common one: inlined
                value = left + right
                return budget.sized(value) if isinstance(value, _SIZED) and len(value) > SIZE_LIMIT else value
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if (
                        isinstance(seq, (str, list, tuple))
                        and isinstance(n, int)
                        and len(seq) * n > budget.size
                    ):
                        raise RenderLimit(
                            f"it multiplied a value of {len(seq):,} by {n:,} (at most {budget.size:,})"
                        )
                if isinstance(left, int) and isinstance(right, int):
                    self.check_bits(left.bit_length() + right.bit_length())
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                self.check_bits(max(right, 0) * left.bit_length())
            elif operator == "%" and isinstance(left, str):
                budget.check_format(left, right)
            return budget.sized(super().call_binop(context, operator, left, right))

        @staticmethod
        def check_bits(bits):
            if bits > INT_BITS_LIMIT:
                raise RenderLimit(
                    f"it computed an integer of about {bits:,} bits (at most {INT_BITS_LIMIT:,})"
                )

        def concat(self, chunks):  # the output, and every {% set %} block and macro body
            out, size = [], 0
            for chunk in chunks:
                size += len(chunk)
                if size > SIZE_LIMIT and size > self.budget.size:
                    raise RenderLimit(f"its output passed {self.budget.size:,} characters")
                out.append(chunk)
            return "".join(out)

    return BoundedEnvironment, Counting


def compile_template(text: str, name: str = "the chat template"):
    """A Jinja template in the sandbox transformers uses (trim_blocks, lstrip_blocks, tojson...),
    bounded: each rendering may take STEP_LIMIT steps and make values and output up to SIZE_LIMIT
    (both growing with the conversation). `name` says which template it is in error messages."""
    from jinja2 import TemplateError as JinjaError

    def raise_exception(message):
        raise _Raised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    environment_class, counting = _jinja()
    env = environment_class()
    env.filters["tojson"] = env.bounded_filter("tojson", tojson)
    env.globals["raise_exception"] = raise_exception
    env.template_name = name
    try:
        return env.from_string(counting().visit(env.parse(text)))
    except JinjaError as exc:
        raise TemplateError(f"{name} is not valid Jinja: {exc}") from None


def _template_line(exc: BaseException) -> str:
    """' at its line N' from the innermost template frame of the traceback Jinja rewrote."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at its line {line}" if line else ""


def render(template, messages: list[dict], special: dict, add_generation_prompt: bool) -> str:
    """The rendered conversation; a template that fails or runs past its budget raises a
    TemplateError naming it, its line and the reason (never a Jinja traceback)."""
    name = getattr(template.environment, "template_name", "the chat template")
    try:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
    except RenderLimit as exc:
        raise TemplateError(f"{name} was stopped{_template_line(exc)}: {exc}") from None
    except _Raised as exc:
        raise TemplateError(f"{name} called raise_exception{_template_line(exc)}: {exc}") from None
    except RecursionError as exc:
        raise TemplateError(f"{name} recursed too deeply{_template_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - Undefined, SecurityError, TypeError...: the template's error
        raise TemplateError(f"{name} failed{_template_line(exc)}: {exc} ({type(exc).__name__})") from None


def chat_segments(template, messages: list[dict], special: dict, loss_on: str):
    """([(text, trained, in_prompt)], prompt text, reference) of one conversation.

    Assistant turn i is trained from where the generation prompt after messages[:i] ends to
    where messages[:i+1] ends (its content and end-of-turn tokens). The prompt is the rendered
    generation prompt of the LAST assistant turn; the reference is that turn's content."""
    full = render(template, messages, special, False)
    name = getattr(template.environment, "template_name", "the chat template")
    spans, prompt = [], None
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(template, messages[:i], special, True)
        upto = render(template, messages[: i + 1], special, False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise TemplateError(
                f"{name} renders turn {i} differently once later turns follow, so the "
                "assistant spans cannot be found; use a template whose rendering of a conversation "
                "starts with the rendering of its first turns"
            )
        spans.append((len(before), len(upto)))
        prompt = before
    if prompt is None:
        raise TemplateError("the conversation has no assistant turn")
    segments, at = [], 0
    for start, end in spans:
        segments += [(at, full[at:start], loss_on == "all"), (start, full[start:end], True)]
        at = end
    segments.append((at, full[at:], loss_on == "all"))
    reference = [m["content"] for m in messages if m["role"] == "assistant"][-1]
    last = spans[-1][0]
    return [(text, trained, start < last) for start, text, trained in segments if text], prompt, reference


def template_sha256(text: str | None) -> str | None:
    """The hash tokenize_shard records for the template it rendered with (None: no template)."""
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def tokens_chat_template(token_files, own, workdir: Path = Path(".")):
    """The chat template the token shards were rendered with, as their tokenize manifests record
    it: tokenize.chat_template, the text of tokenize.chat_template_file (checked against the
    recorded sha256), or else the tokenizer's own template `own`, which is returned unchanged
    (also when the shards have no tokenize manifest beside them). Training sets the result on
    the tokenizer it saves, which merge_model and export_adapter copy into the export."""
    manifests = []
    for shard in token_files:
        found = manifest_of(shard)
        manifest = json.loads(found.read_text(encoding="utf-8")) if found else {}
        if manifest.get("step") == "tokenize_shard":
            manifests.append(manifest)
    if not manifests:
        return own
    tok = manifests[0]["spec"]
    recorded = {m["details"].get("chat_template_sha256") for m in manifests}
    if tok.get("chat_template"):
        text, source = tok["chat_template"], "tokenize.chat_template"
    elif tok.get("chat_template_file"):
        path = workdir / tok["chat_template_file"]
        source = f"tokenize.chat_template_file {tok['chat_template_file']!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(
                f"{source} cannot be read ({exc}): the tokens were rendered with it"
            ) from None
    else:
        return own
    if recorded != {template_sha256(text)}:
        raise TemplateError(
            f"{source} is not the template the token shards were rendered with (their manifests "
            "record another sha256): it changed since tokenizing; rerun snakemake to re-tokenize"
        )
    return text
