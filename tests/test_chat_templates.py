"""Chat templates that fail or run away: tokenize_shard ends with one paragraph naming the
template, the record and the reason (issue 14 items 4 and 6), and normal templates render
exactly as in transformers' sandbox.

Runaway templates run in a child process with a time and memory limit, so that a regression
fails the test instead of hanging or swapping the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import tokenize_shard
from scripts.common.chat import TemplateError, compile_template, render
from scripts.common.files import jsonl_text
from scripts.common.template_sandbox import STEP_LIMIT

REPO = Path(__file__).parents[1]
TOKENIZER = REPO / "tests" / "data" / "mismatched_model"  # its tokenizer is fine (eos </s>)
CHAT = [
    {"role": "user", "content": "Spell 12:"},
    {"role": "assistant", "content": "one two"},
]
RECORDS = [
    {"id": "a" * 16, "split": "train", "messages": CHAT},
    {"id": "b" * 16, "split": "train", "messages": CHAT + CHAT},
]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
# only the second record (4 messages) reaches the bad line
BAD = "{% for m in messages %}{{ m.content }}{% if loop.index == 4 %}\n{{ BAD }}{% endif %}{% endfor %}"


def run_tokenize(tmp_path, template=None, records=RECORDS, tokenizer=TOKENIZER, **tok):
    records_file = tmp_path / "clean.jsonl"
    records_file.write_text(jsonl_text(records))
    spec = {"max_length": 64, "chat_template": template, **tok}
    return [
        "--spec-json",
        json.dumps(spec),
        "--input",
        str(records_file),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(tmp_path / "tokens.parquet"),
        "--manifest",
        str(tmp_path / "tokens.manifest.json"),
    ]


def fails_with(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        tokenize_shard.main(args)
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


RENDER_ERRORS = {  # item 6: what the template does -> the reason the message gives
    "undefined": ("{{ foo.bar }}", "failed at its line 2: 'foo' is undefined (UndefinedError)"),
    "sandbox": (
        "{{ m.__class__.__mro__ }}",
        "failed at its line 2: access to attribute '__class__' of 'dict' object is unsafe. (SecurityError)",
    ),
    "raise_exception": (
        "{{ raise_exception('only two turns, please') }}",
        "called raise_exception at its line 2: only two turns, please",
    ),
    "python_error": ("{{ 1 / 0 }}", "failed at its line 2: division by zero (ZeroDivisionError)"),
}


@pytest.mark.parametrize("name", RENDER_ERRORS)
def test_a_template_that_fails_while_rendering_names_template_record_and_error(name, tmp_path, capsys):
    code, reason = RENDER_ERRORS[name]
    args = run_tokenize(tmp_path, BAD.replace("{{ BAD }}", code))
    err = fails_with(args, capsys)
    assert f"{tmp_path / 'clean.jsonl'}:2: record {'b' * 16}: " in err, err
    assert f"the chat template tokenize.chat_template (inline) {reason}" in err, err
    assert not (tmp_path / "tokens.manifest.json").exists()


def test_a_template_file_and_the_tokenizers_own_template_are_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("chat.jinja").write_text(BAD.replace("{{ BAD }}", "{{ foo.bar }}"))
    err = fails_with(run_tokenize(tmp_path, chat_template_file="chat.jinja"), capsys)
    assert "the chat template tokenize.chat_template_file 'chat.jinja' failed at its line 2" in err
    own = tmp_path / "tokenizer"
    own.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (own / name).write_bytes((TOKENIZER / name).read_bytes())
    (own / "chat_template.jinja").write_text(BAD.replace("{{ BAD }}", "{{ foo.bar }}"))
    err = fails_with(run_tokenize(tmp_path, tokenizer=own), capsys)
    assert f"the tokenizer's own chat template ({own / 'chat_template.jinja'}) failed at its line 2" in err


def test_syntax_errors_and_template_problems_name_the_template_and_record(tmp_path, capsys):
    err = fails_with(run_tokenize(tmp_path, "{% for %}"), capsys)
    assert "the chat template tokenize.chat_template (inline) is not valid Jinja" in err
    no_turn = [{"id": "c" * 16, "split": "train", "messages": CHAT[:1]}]
    err = fails_with(run_tokenize(tmp_path, BAD, records=no_turn), capsys)
    assert f"clean.jsonl:1: record {'c' * 16}: the conversation has no assistant turn" in err


RUNAWAY = {  # item 4: templates that used to hang or exhaust memory -> the reason in the message
    "nested_range_loops": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "steps (loop iterations, calls, filters) for a conversation of 2 messages",
    ),
    "recursive_macro": (
        "{% macro d(n) %}{% if n %}{{ d(n - 1) }}{{ d(n - 1) }}{% endif %}{% endmacro %}{{ d(60) }}",
        "steps (loop iterations, calls, filters)",
    ),
    "huge_output": ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "its output passed"),
    "doubling_string": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "it made a value of 33,554,432 characters",
    ),
    "doubling_plus": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "it made a value of 33,554,432 characters",
    ),
    "string_times_huge": ("{{ 'x' * 10 ** 10 }}", "it multiplied a value of 1 by 10,000,000,000"),
    "huge_power": ("{{ 10 ** 100000000 }}", "it computed an integer of about 400,000,000 bits"),
    "ljust": ("{{ 'x'.ljust(10000000000) }}", "a string width of 10,000,000,000"),
    "center_filter": ("{{ 'x'|center(10000000000) }}", "a string width of 10,000,000,000"),
    "percent_width": ("{{ '%010000000000d' % 1 }}", "a string width of 10,000,000,000"),
    "format_width": ("{{ '{:{}}'.format(1, 10000000000) }}", "a string width of 10,000,000,000"),
}
CHILD_SECONDS, CHILD_BYTES = 60, 2 << 30


def render_in_child(templates: dict) -> dict:
    """{name: (seconds, error or None)} of each template rendered on CHAT in one child process
    limited to CHILD_BYTES of address space; the whole child gets CHILD_SECONDS."""
    code = f"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({CHILD_BYTES}, {CHILD_BYTES}))
from scripts.common.chat import TemplateError, compile_template, render
out = {{}}
for name, text in json.loads(sys.argv[1]).items():
    start = time.perf_counter()
    try:
        render(compile_template(text), {CHAT!r}, {{}}, False)
        error = None
    except TemplateError as exc:
        error = str(exc)
    out[name] = (time.perf_counter() - start, error)
print(json.dumps(out))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(templates)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=CHILD_SECONDS,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_runaway_templates_are_stopped_quickly_with_the_reason():
    results = render_in_child({name: text for name, (text, _) in RUNAWAY.items()})
    for name, (_, reason) in RUNAWAY.items():
        seconds, error = results[name]
        assert error and error.startswith("the chat template was stopped") and reason in error, (name, error)
        assert seconds < 10, (name, seconds)


def test_nested_range_loops_end_tokenize_shard_quickly_naming_template_and_record(tmp_path):
    """Item 4 through the CLI as the rule runs it: it used to hang with no output."""
    text = RUNAWAY["nested_range_loops"][0]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.tokenize_shard", *run_tokenize(tmp_path, text)],
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=CHILD_SECONDS,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    expected = (
        f"clean.jsonl:1: record {'a' * 16}: the chat template tokenize.chat_template (inline) "
        "was stopped at its line 1: it needs more than"
    )
    assert expected in proc.stderr, proc.stderr
    assert time.perf_counter() - start < 30 and not (tmp_path / "tokens.manifest.json").exists()


def test_the_budget_is_per_rendering_and_grows_with_the_conversation():
    square = "{% for a in range(N) %}{% for b in range(N) %}{% endfor %}{% endfor %}"
    template = compile_template(square.replace("N", "400"))  # 160,400 steps: under the limit
    for _ in range(3):  # three renderings, each with its own budget
        assert render(template, CHAT, SPECIAL, False) == ""
    quadratic = compile_template("{% for a in messages %}{% for b in messages %}.{% endfor %}{% endfor %}")
    many = [{"role": "user", "content": "x"}] * 1000  # 1,001,000 steps: a long chat may take them
    assert len(render(quadratic, many, SPECIAL, False)) == 1000 * 1000 > STEP_LIMIT
    with pytest.raises(TemplateError, match="was stopped"):
        render(compile_template(square.replace("N", "600")), CHAT, SPECIAL, False)


FEATURES = [  # what real chat templates use: each renders exactly as in the plain sandbox
    "{% for m in messages %}{{ m['role'] }}: {{ m.content|trim }}"
    "{% if not loop.last %}\n{% endif %}{% endfor %}",
    "{% set ns = namespace(n=0) %}{% for m in messages if m.role == 'user' %}{% set ns.n = ns.n + 1 %}"
    "{{ loop.index }}/{{ loop.length }} {{ loop.revindex }}{% else %}none{% endfor %}{{ ns.n }}",
    "{% for m in messages|selectattr('role', 'equalto', 'assistant') %}{{ loop.length }}{{ m.content }}"
    "{% endfor %}{{ messages|map(attribute='role')|join(', ') }}",
    "{% macro turn(m) %}<|{{ m.role }}|>{{ m.content ~ eos_token }}{% endmacro %}"
    "{% for m in messages %}{{ turn(m) }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
    "{% macro all(ms) %}{% for m in ms %}{{ caller(m) }}{% endfor %}{% endmacro %}"
    "{% call(m) all(messages) %}[{{ m.role|title }}]{% endcall %}"
    "{% filter upper %}{% for m in messages %}{{ loop.cycle('a', 'b') }}{{ m.content }}{% endfor %}"
    "{% endfilter %}",
    "{% for key, value in {'a': 1, 'b': [1, 2]}.items() %}{{ key }}={{ value|tojson }};{% endfor %}"
    "{{ messages|tojson(indent=2) }}{{ '%s-%03d' % ('x', 7) }}{{ '{}:{:>4}'.format('a', 'b') }}"
    "{{ 'ab' * 3 }}{{ [1, 2] + [3] }}{{ 2 ** 10 }}{{ 7 % 3 }}{{ 'x'|center(9) }}",
    "{% for item in [[1, [2]], [3]] recursive %}[{% if item is iterable %}{{ loop(item) }}"
    "{% else %}{{ item }}{% endif %}]{% endfor %}{{ messages[0].content.split()|reverse|join }}",
    "{% set sys %}{% for m in messages[:1] %}{{ m.content|upper }}{% endfor %}{% endset %}{{ sys }}"
    "{% for m in messages[::-1] %}{% if loop.first %}{{ m.content }}{% break %}{% endif %}{% endfor %}"
    "{{ bos_token }}{{ messages|length }}{{ range(3)|list }}{{ loop_var is defined }}",
]


@pytest.mark.parametrize("text", FEATURES, ids=range(len(FEATURES)))
def test_normal_templates_render_as_in_the_plain_sandbox(text):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    plain.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    for add in (False, True):
        expected = plain.from_string(text).render(messages=CHAT, add_generation_prompt=add, **SPECIAL)
        assert render(compile_template(text), CHAT, SPECIAL, add) == expected


def test_a_failing_record_of_a_raw_shard_is_named_by_its_line_in_the_file(tmp_path, capsys):
    """In the workflow tokenize_shard cleans the raw shard first: a record that fails is still
    named by its own line of the shard, after lines that cleaning dropped (an empty record, a
    duplicate), and the drops are counted in the manifest when nothing fails."""

    def stored(rid, messages, source=0):  # shard_data's line: id first, then sorted fields
        return json.dumps({"id": rid, "messages": messages, "source": source})

    empty = [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]
    lines = [
        stored("0" * 16, empty),
        stored("a" * 16, CHAT),
        stored("a" * 16, CHAT, 1),
        stored("b" * 16, CHAT + CHAT),
    ]
    (tmp_path / "raw.jsonl").write_text("\n".join(lines) + "\n")
    data = json.dumps({"sources": [{"path": "x.jsonl", "fields": {"messages": "m"}}] * 2})
    args = run_tokenize(tmp_path, BAD.replace("{{ BAD }}", "{{ 1 / 0 }}"))
    args[args.index("--input") + 1] = str(tmp_path / "raw.jsonl")
    err = fails_with([*args, "--data-json", data], capsys)
    assert f"raw.jsonl:4: record {'b' * 16}: " in err, err

    args = run_tokenize(tmp_path, "{% for m in messages %}{{ m.content }}{% endfor %}")
    args[args.index("--input") + 1] = str(tmp_path / "raw.jsonl")
    tokenize_shard.main([*args, "--data-json", data])
    counts = json.loads((tmp_path / "tokens.manifest.json").read_text())["counts"]
    assert counts["records_in"] == 4 and counts["examples"] == 2
    assert counts["dropped"] == {"empty": 1, "duplicate": 1}
