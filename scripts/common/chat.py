"""Tokenizers and chat templates without transformers: fast to import, batched, exact masks.

`load_tokenizer_files` reads the base model folder's `tokenizer.json` with the `tokenizers`
library (the same Rust tokenizer transformers wraps; a test checks the ids agree) and falls
back to transformers for folders without one. `chat_segments` renders a conversation with a
Jinja chat template (the same sandbox settings as transformers) and cuts it into spans that
are trained on (assistant turns, up to and including their end-of-turn tokens) or not. Each
rendering has a budget of steps and sizes (scripts/common/template_sandbox.py), so a runaway template fails fast,
and a template that fails raises a TemplateError naming it, its line and the reason.
`tokens_chat_template` finds the template token shards were rendered with, which training
saves with its tokenizer so that every exported folder carries it.
"""

from __future__ import annotations

import hashlib
import json
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


def compile_template(text: str, name: str = "the chat template"):
    """A Jinja template in the sandbox transformers uses (trim_blocks, lstrip_blocks, tojson...),
    bounded: each rendering has a budget of steps and sizes (scripts/common/template_sandbox.py).
    `name` says which template it is in error messages."""
    from jinja2 import TemplateError as JinjaError

    def raise_exception(message):
        raise Raised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    from scripts.common.template_sandbox import BoundedEnvironment, Counting, Raised

    env = BoundedEnvironment()
    env.filters["tojson"] = env.bounded_filter("tojson", tojson)
    env.globals["raise_exception"] = raise_exception
    env.template_name = name
    try:
        return env.from_string(Counting().visit(env.parse(text)))
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
    from scripts.common.template_sandbox import Raised, RenderLimit

    name = getattr(template.environment, "template_name", "the chat template")
    try:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
    except RenderLimit as exc:
        raise TemplateError(f"{name} was stopped{_template_line(exc)}: {exc}") from None
    except Raised as exc:
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
