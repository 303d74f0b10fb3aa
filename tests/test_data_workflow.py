"""Data at scale through Snakemake: a 100k-record JSONL source, a two-value learning-rate sweep,
then one record edited, added and deleted; the jobs Snakemake ran are counted each time, with a
local model (a fixed tokenizer) and with a model built from a config (its tokenizer trains on
shard_data's bounded sample, which an edit outside the sample leaves byte-identical)."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml

from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake

pytestmark = pytest.mark.slow
RECORDS, SHARDS = 100_000, 16
WORDS = "zero one two three four five six seven eight nine".split()


def write_source(path, count: int) -> list[str]:
    rng = random.Random(1)
    lines = []
    for _ in range(count):
        number = str(rng.randrange(10**9))
        lines.append(
            json.dumps({"prompt": f"Spell {number}:", "completion": " ".join(WORDS[int(d)] for d in number)})
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return lines


def build_local_model(folder, texts) -> None:
    from scripts.base_model import build_model_from_config, train_tokenizer
    from scripts.compiler.spec import check_slice

    build = check_slice("model", {"build": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}})["build"]
    tokenizer = train_tokenizer(texts, 300)
    tokenizer.save_pretrained(str(folder))
    build_model_from_config(build, tokenizer, folder)


@pytest.fixture(params=["path", "build"])
def big(request, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("data_at_scale"))
    lines = write_source(workdir / "data/big/records.jsonl", RECORDS)
    spec = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    if request.param == "path":  # a fixed tokenizer: edits never retrain it
        build_local_model(workdir / "models/tiny", [json.loads(line)["completion"] for line in lines[:2000]])
        spec["model"] = {"path": str(workdir / "models/tiny")}
    else:
        spec["model"] = {"build": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "vocab_size": 300}}
    spec["data"] = {
        "sources": [
            {"path": "data/big/records.jsonl", "fields": {"prompt": "prompt", "completion": "completion"}}
        ],
        "num_shards": SHARDS,
    }
    spec["sweep"] = {"train.learning_rate": [1e-3, 3e-3]}
    (workdir / "specs/demo.yaml").unlink()
    (workdir / "specs/big.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return workdir


def rewrite(workdir, change) -> None:
    path = workdir / "data/big/records.jsonl"
    lines = path.read_text().splitlines()
    change(lines)
    path.write_text("\n".join(lines) + "\n")


def data_jobs(workdir):
    ran = jobs_run(snakemake(workdir, "data", timeout=600))
    manifest = next((workdir / "results/data").glob("*/raw.manifest.json"))
    details = json.loads(manifest.read_text())["details"]
    # old shards do not pile up: raw/ holds exactly the shards the manifest names
    current = sorted(s["hash"] for s in details["shards"])
    stored = sorted(p.name.removesuffix(".jsonl") for p in (manifest.parent / "raw").glob("*.jsonl"))
    assert stored == current
    # nor do old token shards: only the current ones and those this build's jobs reused rows from
    previous_map = manifest.parent / "cache" / "previous.json"
    previous = set(json.loads(previous_map.read_text()).values()) if previous_map.is_file() else set()
    for folder in (workdir / "results/tokens").iterdir():
        tokens = {p.name.removesuffix(".parquet") for p in folder.glob("*.parquet")}
        assert set(current) <= tokens <= set(current) | previous, sorted(tokens - set(current))
    return ran, details["sources"][0]


def in_tokenizer_sample(workdir, text: str) -> bool:
    return any(text in p.read_text() for p in (workdir / "results/data").glob("*/tokenizer_sample.jsonl"))


def test_sweep_tokenizes_once_and_edits_rebuild_only_their_shards(big):
    ran, source = data_jobs(big)
    assert ran["shard_data"] == 1 and "clean_shard" not in ran
    assert ran["tokenize_shard"] == SHARDS  # two runs, one set of tokens
    assert ran["audit_data"] == 1 and source["records"] == RECORDS  # one audit of the shared shards

    edited = json.loads((big / "data/big/records.jsonl").read_text().splitlines()[50_000])["prompt"]
    assert not in_tokenizer_sample(big, edited)  # the sample holds ~3% of the records
    rewrite(big, lambda lines: lines.__setitem__(50_000, lines[50_000].replace('"Spell ', '"Spell 0')))
    ran, source = data_jobs(big)
    assert not in_tokenizer_sample(big, edited.replace("Spell ", "Spell 0"))
    assert 1 <= ran["tokenize_shard"] <= 2, ran
    assert "base_model" not in ran and source["chunks"] - source["chunks_cached"] == 1

    rewrite(big, lambda lines: lines.append(json.dumps({"prompt": "Spell 7:", "completion": "seven"})))
    ran, source = data_jobs(big)
    assert ran["tokenize_shard"] == 1, ran
    assert source["records"] == RECORDS + 1

    rewrite(big, lambda lines: lines.pop(123))
    ran, source = data_jobs(big)
    assert ran["tokenize_shard"] == 1, ran
    assert source["records"] == RECORDS

    assert not jobs_run(snakemake(big, "data"))  # and nothing left to do


def current_files(workdir) -> dict:
    """sha256 of the data a build holds: the shards, the tokenizer sample and the token shards
    the shard manifest names (old token shards may stay beside them), and the counts of the
    token shards' manifests (records read, dropped by reason, examples)."""
    import hashlib

    manifest = next((workdir / "results/data").glob("*/raw.manifest.json"))
    shards = [s["hash"] for s in json.loads(manifest.read_text())["details"]["shards"]]
    paths = [manifest.parent / "tokenizer_sample.jsonl"]
    paths += [manifest.parent / "raw" / f"{h}.jsonl" for h in shards]
    paths += [p for h in shards for p in (workdir / "results/tokens").glob(f"*/{h}.parquet")]
    files = {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    for path in (p.with_suffix(".manifest.json") for p in paths if p.suffix == ".parquet"):
        files[str(path.relative_to(workdir))] = json.loads(path.read_text())["counts"]
    return files


def test_edits_rebuild_the_bytes_of_a_fresh_build(tmp_path):
    """Chunks parsed again, shards rebuilt from the old ones, token rows reused from the old
    token shards: after edits, the data is byte for byte what a fresh build writes."""
    builds = []
    for name in ("edited", "fresh"):
        workdir = copy_workflow(tmp_path / name)
        lines = write_source(workdir / "data/big/records.jsonl", 20_000)
        build_local_model(workdir / "models/tiny", [json.loads(line)["completion"] for line in lines[:2000]])
        spec = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
        spec["model"] = {"path": "models/tiny"}
        spec["data"] = {
            "sources": [
                {"path": "data/big/records.jsonl", "fields": {"prompt": "prompt", "completion": "completion"}}
            ],
            "num_shards": 4,
        }
        (workdir / "specs/demo.yaml").unlink()
        (workdir / "specs/big.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        builds.append(workdir)
    edited, fresh = builds
    jobs_run(snakemake(edited, "data"))

    def change(lines):
        lines[9_000] = lines[9_000].replace('"Spell ', '"Spell 0')
        lines.insert(15_000, lines[3])  # an exact duplicate
        lines.append(json.dumps({"prompt": "Spell 7:", "completion": "seven"}))
        del lines[123]

    rewrite(edited, change)
    ran = jobs_run(snakemake(edited, "data"))
    logs = "".join(p.read_text() for p in (edited / "logs/tokens").rglob("tokenize_shard/*.log"))
    assert ran["tokenize_shard"] <= 4 and max(map(int, re.findall(r"\((\d+) reused\)", logs))) > 1000
    rewrite(fresh, change)
    jobs_run(snakemake(fresh, "data"))
    assert current_files(edited) == current_files(fresh)
    counts = [v for k, v in current_files(fresh).items() if k.endswith(".manifest.json")]
    assert sum(c["dropped"].get("duplicate", 0) for c in counts) == 1  # the copy of line 3
    assert sum(c["records_in"] for c in counts) == 20_001 and sum(c["examples"] for c in counts) == 20_000
