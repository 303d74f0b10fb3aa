"""The Ollama Modelfile of a GGUF export as text (pure functions, no model): its SYSTEM is the
system message the data steps put in the conversations, read back by Ollama's parser rules."""

from __future__ import annotations

import pytest
import yaml

from scripts.compiler.gguf_rules import GGUFError
from scripts.compiler.spec import SpecError, load_specs
from scripts.gguf.modelfile import RAW_TEMPLATE, modelfile


def ollama_values(text: str) -> dict[str, str]:
    """Command -> value as Ollama's parser (parser/parser.go, ParseFile) reads a Modelfile: a
    value opened with three quotes ends at the first line break where the text so far, trailing
    blanks trimmed, ends with three quotes; there are no escapes."""
    values, pos = {}, 0
    while pos < len(text):
        end = text.find("\n", pos)
        line = text[pos : end if end >= 0 else len(text)]
        name, _, value = line.partition(" ")
        if value.startswith('"""'):
            while not (len(value.rstrip()) >= 6 and value.rstrip().endswith('"""')):
                nxt = text.find("\n", end + 1)
                value += text[end : nxt if nxt >= 0 else len(text)]
                end = nxt if nxt >= 0 else len(text)
            value = value.rstrip()[3:-3]
        values.setdefault(name, value)
        pos = (end if end >= 0 else len(text)) + 1
    return values


@pytest.mark.parametrize(
    "system",
    ["You spell numbers.", 'Answer in a """block""" like this.', 'Two lines:\nthe end is """quoted"""'],
)
def test_the_modelfile_system_reads_back_as_trained(system):
    text = modelfile("model-f32.gguf", RAW_TEMPLATE, ["</s>"], system)
    assert ollama_values(text) == {
        "FROM": "./model-f32.gguf",
        "TEMPLATE": RAW_TEMPLATE,
        "PARAMETER": 'stop "</s>"',
        "SYSTEM": system,
    }


def test_a_system_with_three_quotes_at_a_line_end_is_refused():
    with pytest.raises(GGUFError, match='Modelfile\'s SYSTEM holds """ at the end of a line'):
        modelfile("model-f32.gguf", RAW_TEMPLATE, [], 'Quote like """  \nthis.')


def chat_spec(tmp_path, systems: list[str | None], gguf: bool = True) -> str:
    """The demo spec on two sharegpt chat sources with these chat.system values."""
    spec = yaml.safe_load(open("specs/demo.yaml"))
    spec["data"]["sources"] = [
        {
            "path": "tests/data/chat_sharegpt.jsonl",
            "fields": {"messages": "conversations"},
            "chat": {"role_key": "from", "content_key": "value", "system": system},
        }
        for system in systems
    ]
    spec["tokenize"]["chat_template_file"] = "tests/data/chat_template.jinja"
    if gguf:
        spec["export"]["gguf"] = {"types": ["f32"]}
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_the_export_slice_carries_the_chat_sources_system(tmp_path):
    from scripts.compiler.steps import step_slices

    (run,) = load_specs([chat_spec(tmp_path, ["Spell digits.", "Spell digits."])])
    assert step_slices(run.sections)["export_gguf"][1]["system"] == "Spell digits."


def test_chat_sources_with_different_system_messages_are_refused_with_gguf(tmp_path):
    with pytest.raises(SpecError) as err:
        load_specs([chat_spec(tmp_path, ["Spell digits.", None])])
    message = str(err.value)
    assert "chat.yaml:" in message and "data.sources[1].chat.system: null differs from" in message
    assert "give every chat source the same chat.system (or none), or drop export.gguf" in message
    # without GGUF there is no Modelfile, and the sources may differ
    load_specs([chat_spec(tmp_path, ["Spell digits.", None], gguf=False)])
    with pytest.raises(SpecError, match=r"data.sources\[0\].chat.system: holds \"\"\" at the end of a line"):
        load_specs([chat_spec(tmp_path, ['End """\nhere.'])])


SPECIAL = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": None, "unk_token": None}
TURN = (
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
)
GENERATION = (
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA3 = {  # BOS written once: first in the template (Llama 3.1 on), or on the first message (Llama 3)
    "leading": "{{- bos_token }}\n{%- for m in messages %}" + TURN + "{% endfor %}" + GENERATION,
    "first message": "{% for m in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    + TURN
    + "{% endfor %}"
    + GENERATION,
}


@pytest.mark.parametrize("name", LLAMA3)
def test_a_llama3_template_that_writes_bos_first_becomes_an_ollama_template(name):
    from scripts.gguf.modelfile import go_template, render_go, render_jinja, sample_conversations

    template = LLAMA3[name]
    go, end_of_turn = go_template(template, SPECIAL, add_bos=True)
    assert "begin_of_text" not in go and end_of_turn == "<|eot_id|>"
    for conversation in sample_conversations(True):
        trained = render_jinja(template, conversation, SPECIAL, True)
        assert trained.startswith("<|begin_of_text|><|start_header_id|>")
        # llama.cpp and Ollama put BOS first (the GGUF's add_bos_token), then the rendered text
        assert "<|begin_of_text|>" + render_go(go, {"Messages": conversation}) == trained
    # a tokenizer that does not add BOS: the Go template writes it once, before the turns
    go, _ = go_template(template, SPECIAL, add_bos=False)
    assert go.startswith('{{ "<|begin_of_text|>" }}{{ range .Messages }}')
    conversation = sample_conversations(True)[-1]
    assert render_go(go, {"Messages": conversation}) == render_jinja(template, conversation, SPECIAL, True)


def test_a_template_with_bos_on_every_turn_is_still_refused():
    template = "{% for m in messages %}{{ bos_token }}" + TURN + "{% endfor %}" + GENERATION
    from scripts.gguf.modelfile import go_template

    with pytest.raises(GGUFError, match="its turns depend on their position"):
        go_template(template, SPECIAL)
