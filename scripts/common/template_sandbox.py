"""The bounded Jinja sandbox chat templates render in: transformers' sandbox settings plus a
budget of steps and sizes per rendering (see STEP_LIMIT), so a runaway template fails fast the
same way on every machine. Imported only by steps that render (scripts/common/chat.py imports it
on first use), so Jinja stays out of the others."""

from __future__ import annotations

import functools
import re

from jinja2 import Template, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.ext import loopcontrols
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

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


class Raised(Exception):
    """The template called raise_exception(message)."""


class Budget:
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
        self.environment.budget = Budget(vars)  # every rendering starts afresh
        return super().new_context(vars, shared, locals)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """transformers' sandbox, plus a budget: steps (loop items, calls, filters) and sizes."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})  # also keeps them from constant folding
    template_class = BoundedTemplate

    def __init__(self):
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        self.budget = Budget()
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

    def unsafe_undefined(self, obj, attribute):
        """An unsafe attribute (`x.__class__`, `messages.append`) is an error at once: Jinja's own
        sandbox returns an undefined value that renders as empty text, so a template reaching for
        one would silently render nothing and every record would be dropped."""
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

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
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > budget.size:
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
            raise RenderLimit(f"it computed an integer of about {bits:,} bits (at most {INT_BITS_LIMIT:,})")

    def concat(self, chunks):  # the output, and every {% set %} block and macro body
        out, size = [], 0
        for chunk in chunks:
            size += len(chunk)
            if size > SIZE_LIMIT and size > self.budget.size:
                raise RenderLimit(f"its output passed {self.budget.size:,} characters")
            out.append(chunk)
        return "".join(out)
