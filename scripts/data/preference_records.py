"""Preference records: a prompt with a chosen and a rejected response (DPO, ORPO, SimPO).

The shape is chosen by the keys of a source's `fields`:
  {prompt, chosen, rejected}     explicit: three texts, or a prompt conversation and responses
  {messages, chosen, rejected}   a chat prompt (list of turns) and the responses (a text, taken as
                                 the assistant's answer, a list of assistant turns, or one message,
                                 as LLaMA-Factory's sharegpt ranking records have them)
  {chosen, rejected}             implicit: two whole texts or conversations; the prompt is their
                                 shared beginning (texts: cut back to the last whitespace, so a
                                 word is never split; conversations: the shared turns)
A stored pair is {"prompt", "chosen", "rejected"}, all texts or all turn lists. Pairs that share a
prompt share a split (the split hashes the prompt), so a prompt never straddles train/validation.

KTO records, {prompt, completion, label}, are a prompt/completion record with a boolean `label`:
true for a desirable completion, false for an undesirable one. They split by prompt too.
"""

from __future__ import annotations

from scripts.data.source_rows import JSONNumber, SourceError, _get, _kind, _string, map_messages

PAIR_SHAPES = ({"prompt", "chosen", "rejected"}, {"messages", "chosen", "rejected"}, {"chosen", "rejected"})


def _side(row, source: dict, name: str, where: str):
    column = source["fields"][name]
    value = _get(row, column, where)
    if isinstance(value, dict) and name != "messages":
        value = [value]  # one message (LLaMA-Factory's sharegpt ranking: chosen: {from: gpt, value: ...})
    if isinstance(value, list) or name == "messages":
        return map_messages(value, source["chat"], column, where)
    return _string(value, column, where)


def _as_turns(response, name: str, where: str) -> list[dict]:
    turns = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
    if turns[0]["role"] != "assistant":
        raise SourceError(
            f"{where}: '{name}' must start with an assistant turn, got {turns[0]['role']}", "wrong_type"
        )
    return turns


def shared_text_prefix(chosen: str, rejected: str) -> int:
    """Length of the shared beginning of two texts, cut back to just after its last whitespace."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    if n == min(len(chosen), len(rejected)):
        n -= 1  # one text is the other's beginning: keep at least one character of each response
    while n > 0 and not chosen[n - 1].isspace():
        n -= 1
    return max(n, 0)


def split_implicit(chosen, rejected, where: str):
    """(prompt, chosen response, rejected response) of an implicit pair."""
    if isinstance(chosen, str):
        cut = shared_text_prefix(chosen, rejected)
        prompt, chosen, rejected = chosen[:cut], chosen[cut:], rejected[cut:]
        if not prompt.strip():
            raise SourceError(
                f"{where}: 'chosen' and 'rejected' share no prompt (no common beginning up to a "
                "space); map the prompt with fields.prompt",
                "no_shared_prompt",
            )
        return prompt, chosen, rejected
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    if n == 0 or chosen[n - 1]["role"] == "assistant":
        raise SourceError(
            f"{where}: 'chosen' and 'rejected' must share their first turns up to a user turn and then "
            "differ in the assistant's answer; map the prompt with fields.messages",
            "no_shared_prompt",
        )
    return chosen[:n], chosen[n:], rejected[n:]


def map_pair(row, source: dict, where: str) -> dict:
    """One source row as a stored preference pair."""
    fields = source["fields"]
    chosen, rejected = _side(row, source, "chosen", where), _side(row, source, "rejected", where)
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise SourceError(
            f"{where}: 'chosen' and 'rejected' must both be texts or both lists of turns", "wrong_type"
        )
    if "prompt" in fields or "messages" in fields:
        prompt = _side(row, source, "messages" if "messages" in fields else "prompt", where)
    else:
        prompt, chosen, rejected = split_implicit(chosen, rejected, where)
    if isinstance(prompt, list):
        if prompt[-1]["role"] == "assistant":
            raise SourceError(f"{where}: the prompt's last turn must not be the assistant's", "wrong_type")
        chosen, rejected = _as_turns(chosen, "chosen", where), _as_turns(rejected, "rejected", where)
    elif not isinstance(chosen, str):
        raise SourceError(f"{where}: a text prompt needs text responses, got lists of turns", "wrong_type")
    if chosen == rejected:
        raise SourceError(f"{where}: 'chosen' and 'rejected' are the same response", "identical_pair")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def pair_texts(record: dict) -> list[str]:
    """The texts of a pair as cleaning counts them (stripped: whitespace only is empty)."""
    texts = []
    for key in ("prompt", "chosen", "rejected"):
        value = record[key]
        texts += [m["content"].strip() for m in value] if isinstance(value, list) else [value.strip()]
    return texts


LABEL_TEXTS = {"true": True, "false": False}


def parse_label(value, column: str, where: str) -> bool:
    """A KTO label: a boolean, or the text true or false in any case (CSV and TSV cells are text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and not isinstance(value, JSONNumber) and value.strip().lower() in LABEL_TEXTS:
        return LABEL_TEXTS[value.strip().lower()]
    got = f"{_kind(value)} {value!r:.40}" if not isinstance(value, JSONNumber) else f"the number {value}"
    raise SourceError(
        f"{where}: field '{column}' must be a boolean (true: a desirable completion, false: an undesirable "
        f"one), got {got}; write true or false",
        "bad_label",
    )


def map_labelled(row, source: dict, where: str) -> dict:
    """One source row as a stored KTO record {prompt, completion, label}."""
    fields = source["fields"]
    prompt, completion = (
        _string(_get(row, fields[k], where), fields[k], where) for k in ("prompt", "completion")
    )
    label = parse_label(_get(row, fields["label"], where), fields["label"], where)
    return {"prompt": prompt, "completion": completion, "label": label}
