"""Tokenization: same ids as transformers, exact loss masks for multi-turn chats, the template in
the key, and the audit that catches a template without EOS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scripts import audit_data
from scripts.common.chat import load_tokenizer_files
from scripts.compiler.spec import artifact_keys, check_slice, load_spec_file
from tests.records_fixtures import RECORDS, TEMPLATE, tokenize


def test_ids_match_transformers(model_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(model_dir))
    ours = load_tokenizer_files(model_dir)
    texts = ["Spell 372:", "three seven two", "</s> and <s> inside", "ünïcode  spaces\n"]
    for special in (True, False):
        assert ours.encode(texts, special) == hf(texts, add_special_tokens=special)["input_ids"]
    assert ours.ids["eos_token"] == hf.eos_token_id and ours.ids["pad_token"] == hf.pad_token_id


def test_prompt_completion_and_text(tmp_path, model_dir):
    rows = {r["id"][0]: r for r in tokenize(tmp_path, model_dir, RECORDS[:2])}
    tok = load_tokenizer_files(model_dir)
    pc, text = rows["a"], rows["b"]
    prompt_ids = tok.encode(["Spell 5:"])[0]
    assert pc["input_ids"][: pc["prompt_length"]] == prompt_ids and pc["labels"][: len(prompt_ids)] == [
        -100
    ] * len(prompt_ids)
    assert pc["labels"][-1] == tok.ids["eos_token"] and (pc["prompt"], pc["reference"]) == (
        "Spell 5:",
        "five",
    )
    assert text["labels"] == text["input_ids"] and text["prompt_length"] == 0


def test_multi_turn_chat_trains_on_every_assistant_turn_only(tmp_path, model_dir):
    (row,) = tokenize(tmp_path, model_dir, RECORDS[2:])
    tok = load_tokenizer_files(model_dir)
    ids, labels = row["input_ids"], row["labels"]
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    assert [tok.decode(run) for run in runs] == ["one two</s>\n", "three</s>\n"]
    assert row["reference"] == "three"
    assert row["prompt"].endswith("<|user|>\nSpell 3:\n<|assistant|>\n")
    assert tok.decode(ids[: row["prompt_length"]]) == row["prompt"]
    everything = tokenize(tmp_path, model_dir, RECORDS[2:], loss_on="all")[0]
    assert everything["labels"] == everything["input_ids"]


def test_chat_without_a_template_fails_clearly(tmp_path, model_dir, capsys):
    with pytest.raises(SystemExit):
        tokenize(tmp_path, model_dir, RECORDS[2:], chat_template=None)
    assert "chat records need a chat template: the tokenizer has none" in capsys.readouterr().err


def test_template_text_is_in_the_tokens_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(Path(__file__).parents[1] / "specs", "specs")
    (run,) = load_spec_file("specs/demo.yaml")
    sections = run.sections
    base = artifact_keys(sections)["tokens"]

    def key(**tok):
        return artifact_keys(
            {**sections, "tokenize": check_slice("tokenize", {**sections["tokenize"], **tok})}
        )["tokens"]

    assert key(audit={"examples": 50}) == base  # audit settings do not re-tokenize
    assert key(chat_template=TEMPLATE) != key(chat_template=TEMPLATE + " ") != base
    Path("t.jinja").write_text(TEMPLATE)
    first = key(chat_template_file="t.jinja")
    Path("t.jinja").write_text(TEMPLATE.replace("<|assistant|>", "<|bot|>"))
    assert key(chat_template_file="t.jinja") != first


def audit(tmp_path, model_dir, **tok):
    spec = json.dumps({"max_length": 128, **tok})
    return audit_data.main(
        [
            "--spec-json",
            spec,
            "--tokens",
            str(tmp_path / "tokens.parquet"),
            "--tokenizer",
            str(model_dir),
            "--manifest",
            str(tmp_path / "audit.json"),
            "--examples",
            str(tmp_path / "ex.txt"),
        ]
    )


def test_audit_passes_good_data_and_renders_masks(tmp_path, model_dir):
    tokenize(tmp_path, model_dir)
    audit(tmp_path, model_dir)
    report = json.loads((tmp_path / "audit.json").read_text())
    assert report["counts"] == {"examples": 3, "failed": {}}
    text = (tmp_path / "ex.txt").read_text()
    assert "⟪<s>Spell 5:⟫five</s>" in text and "⟪<|assistant|>\n⟫" not in text


def test_audit_fails_a_template_without_eos(tmp_path, model_dir, capsys):
    tokenize(tmp_path, model_dir, RECORDS[2:], chat_template=TEMPLATE.replace("{{ eos_token }}", ""))
    with pytest.raises(SystemExit):
        audit(tmp_path, model_dir)
    err = capsys.readouterr().err
    assert "1 examples has a trained span (assistant turn or completion) without EOS as a label" in err
    assert not (tmp_path / "audit.json").exists()
    audit(tmp_path, model_dir, audit={"fail": False})  # report only
    assert json.loads((tmp_path / "audit.json").read_text())["counts"]["failed"] == {"no_eos_at_turn_end": 1}


def test_audit_fails_when_no_example_survived_tokenization(tmp_path, model_dir, capsys):
    """A template that renders no assistant text drops every record as no_labels: the audit
    says so instead of passing "0 of 0 examples" (whatever tokenize.audit.fail says)."""
    no_answers = (
        "{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}\n{% endif %}{% endfor %}"
    )
    assert tokenize(tmp_path, model_dir, RECORDS[2:], chat_template=no_answers) == []
    with pytest.raises(SystemExit) as exit_:
        audit(tmp_path, model_dir, audit={"fail": False})
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and not (tmp_path / "audit.json").exists()
    assert (
        "error: the data audit found 0 examples in 1 token shard(s), so there is nothing to train on" in err
    )
    assert (
        "dropped every record: 1 no_labels (nothing to train on after the prompt: does the chat template"
        in err
    )
    assert f"{tmp_path / 'tokens.manifest.json'} lists dropped records under details.drop_examples" in err


def test_an_unsafe_attribute_in_a_chat_template_is_an_error_not_empty_text(tmp_path, model_dir, capsys):
    """Jinja's sandbox renders an unsafe attribute as empty text; here it fails, naming the template."""
    unsafe = "{% for m in messages %}{{ m.content.__class__ }}{% endfor %}"
    with pytest.raises(SystemExit):
        tokenize(tmp_path, model_dir, RECORDS[2:], chat_template=unsafe)
    err = capsys.readouterr().err
    assert (
        "the chat template tokenize.chat_template (inline) failed at its line 1: access to attribute " in err
    )
    assert "'__class__' of 'str' object is unsafe. (SecurityError)" in err


def test_audit_sums_the_tokenize_manifests_and_checks_shards_without_one(tmp_path, model_dir):
    tokenize(tmp_path, model_dir, RECORDS[2:], chat_template=TEMPLATE.replace("{{ eos_token }}", ""))
    recorded = json.loads((tmp_path / "tokens.manifest.json").read_text())["details"]["audit"]
    assert recorded["failed"] == {"no_eos_at_turn_end": 1}
    audit(tmp_path, model_dir, audit={"fail": False})
    from_manifest = json.loads((tmp_path / "audit.json").read_text())
    (tmp_path / "tokens.manifest.json").unlink()
    audit(tmp_path, model_dir, audit={"fail": False})
    computed = json.loads((tmp_path / "audit.json").read_text())
    assert from_manifest["counts"] == computed["counts"] == {"examples": 1, "failed": recorded["failed"]}
    assert from_manifest["details"]["failed_ids"] == computed["details"]["failed_ids"]


def test_audit_records_each_shards_digest_from_its_manifest_unless_the_shard_changed(tmp_path, model_dir):
    """The audit's inputs carry each token shard's sha256: the one tokenize_shard recorded when
    the shard is as it wrote it, else the digest of the file as it is now."""
    import hashlib
    import os

    tokenize(tmp_path, model_dir)
    shard = tmp_path / "tokens.parquet"
    written = json.loads((tmp_path / "tokens.manifest.json").read_text())["outputs"][0]["sha256"]
    audit(tmp_path, model_dir)
    assert json.loads((tmp_path / "audit.json").read_text())["inputs"] == [
        {"path": str(shard), "sha256": written}
    ]

    pq.write_table(pq.read_table(shard).slice(0, 2), shard)  # changed after its manifest
    later = (tmp_path / "tokens.manifest.json").stat().st_mtime_ns + 10**9
    os.utime(shard, ns=(later, later))
    audit(tmp_path, model_dir)
    now = hashlib.sha256(shard.read_bytes()).hexdigest()
    assert now != written
    assert json.loads((tmp_path / "audit.json").read_text())["inputs"] == [
        {"path": str(shard), "sha256": now}
    ]


def test_stale_token_shards_are_removed_and_the_ones_still_read_kept(tmp_path):
    """After an edit, token shards whose raw shard is gone are deleted by the next tokenize job,
    except the old versions this build's jobs reuse rows from (previous.json); only shard files."""
    from scripts.data.token_reuse import remove_stale_tokens

    current, replaced, reused, stale = ("a" * 16, "b" * 16), "c" * 16, "d" * 16, "e" * 16
    (tmp_path / "raw").mkdir()
    (tmp_path / "tokens").mkdir()
    for shard in current:
        (tmp_path / "raw" / f"{shard}.jsonl").write_text("{}\n")
    (tmp_path / "previous.json").write_text(json.dumps({current[1]: reused}))
    names = [
        f"{s}.{ext}" for s in (*current, replaced, reused, stale) for ext in ("parquet", "manifest.json")
    ]
    for name in [*names, "notes.txt", "tokens.parquet", f"{stale}.parquet.tmp123"]:
        (tmp_path / "tokens" / name).write_text("")
    raw, out = (
        str(tmp_path / "raw" / f"{current[0]}.jsonl"),
        str(tmp_path / "tokens" / f"{current[0]}.parquet"),
    )
    assert remove_stale_tokens(raw, out, str(tmp_path / "previous.json")) == 4
    left = sorted(p.name for p in (tmp_path / "tokens").iterdir())
    assert left == sorted([*names[:4], *names[6:8], "notes.txt", "tokens.parquet", f"{stale}.parquet.tmp123"])
    # an input outside the workflow's layout (not a shard name): nothing is touched
    assert remove_stale_tokens(str(tmp_path / "clean.jsonl"), out, None) == 0
