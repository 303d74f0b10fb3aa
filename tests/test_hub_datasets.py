"""Hub dataset sources (data.sources[i].hub), offline against a local hub cache built here
(tests/hub_datasets.py): resolution, the data key, the shard_data manifest, and the workflow:
a new revision reruns the data steps and `snakemake why` says `revision a -> b`; an unpinned
revision warns with the sha to pin; a revision the cache lacks fails before any job."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from scripts import shard_data
from scripts.compiler import hub_sources
from scripts.compiler.spec import SpecError, artifact_keys, load_specs
from tests.hub_datasets import REPO, build_cache, move_ref
from tests.workflow_fixtures import REPO as WORKFLOW
from tests.workflow_fixtures import copy_workflow, jobs_run, snakemake

FIELDS = {"prompt": "question", "completion": "answer"}


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    """A hub cache with the fixture dataset (v1 = refs/main, v2), used offline."""
    cache = tmp_path_factory.mktemp("hub")
    shas = build_cache(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(hub_sources, "_RESOLVED", {})  # resolutions of other caches do not leak in
        yield cache, shas


def hub_spec(revision: str | None, **hub) -> str:
    """The demo spec reading the fixture dataset's train split instead of its file, trained briefly."""
    spec = yaml.safe_load((WORKFLOW / "specs" / "demo.yaml").read_text())
    source = {"repo": REPO, **({"revision": revision} if revision else {}), "split": "train", **hub}
    spec["data"]["sources"] = [{"hub": source, "fields": FIELDS}]
    spec["data"]["num_shards"] = 2
    spec["train"].update(max_steps=4, save_steps=4, logging_steps=2)
    return yaml.safe_dump(spec, sort_keys=False)


def write_spec(folder: Path, text: str) -> Path:
    path = folder / "specs" / "hub.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_pinned_revision_resolves_from_the_cache_and_keys_the_data(hub_env, tmp_path, monkeypatch):
    cache, shas = hub_env
    (run_v1,) = load_specs([write_spec(tmp_path / "a", hub_spec(shas["v1"]))])
    (run_v2,) = load_specs([write_spec(tmp_path / "b", hub_spec(shas["v2"]))])
    assert run_v1.keys["data"] != run_v2.keys["data"]
    resolved = hub_sources.resolve_data(run_v1.sections["data"])[0]
    assert resolved["commit"] == shas["v1"] and resolved["pinned"]
    assert [f["path"] for f in resolved["files"]] == ["data/train.jsonl"]  # the README's default config
    # the key holds the files' sha256: the same commit with other bytes is another key
    other = tmp_path / "other-cache"
    shutil.copytree(cache, other, symlinks=True)
    blob = (Path(resolved["snapshot"].replace(str(cache), str(other))) / "data/train.jsonl").resolve()
    blob.write_bytes(blob.read_bytes().replace(b"Spell 10:", b"Spell 11:"))
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    changed = artifact_keys(run_v1.sections)["data"]
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert changed != artifact_keys(run_v1.sections)["data"]


def test_file_sources_keep_their_keys(tmp_path):
    """A spec without hub sources hashes as before this feature (no rebuild on upgrade)."""
    from scripts.compiler.spec import short_hash

    (run,) = load_specs([WORKFLOW / "specs" / "demo.yaml"])
    assert run.keys["data"] == short_hash({"data": run.sections["data"]})


@pytest.mark.parametrize(
    ("hub", "expect"),
    [
        ({"config": "tables", "split": None}, ["tables/part-0.parquet"]),
        ({"data_files": ["data/*.jsonl"], "split": None}, ["data/test.jsonl", "data/train.jsonl"]),
        ({"config": "default", "split": "test"}, ["data/test.jsonl"]),
    ],
)
def test_config_split_and_data_files_choose_the_files(hub_env, tmp_path, hub, expect):
    _, shas = hub_env
    (run,) = load_specs([write_spec(tmp_path, hub_spec(shas["v2"], **hub))])
    assert [f["path"] for f in hub_sources.resolve_data(run.sections["data"])[0]["files"]] == expect


@pytest.mark.parametrize(
    ("hub", "expect"),
    [
        ({"rev": "0" * 40}, "hub.revision: revision '0000000000000000000000000000000000000000' of dataset"),
        ({"repo": "tunemake-tests/absent"}, "dataset tunemake-tests/absent is not in the hub cache"),
        (
            {"data_files": "data/*.csv"},
            "['data/*.csv'] match no file; the snapshot holds: README.md, data/test.jsonl",
        ),
        ({"config": "letters"}, "no config 'letters'; the README's configs are: default, tables"),
        ({"revison": "main"}, "data.sources[0].hub.revison: unknown key; did you mean 'revision'?"),
    ],
)
def test_bad_hub_sources_are_refused_with_the_fix(hub_env, tmp_path, hub, expect):
    _, shas = hub_env
    revision = hub.pop("rev", shas["v1"])
    with pytest.raises(SpecError) as error:
        load_specs([write_spec(tmp_path, hub_spec(revision, **hub))])
    assert expect in str(error.value)
    assert str(error.value).startswith(f"{tmp_path}/specs/hub.yaml:")


def test_shard_data_records_the_commit_and_files(hub_env, tmp_path, capsys, monkeypatch):
    _, shas = hub_env
    monkeypatch.setattr(hub_sources, "_WARNED", set())
    (run,) = load_specs([write_spec(tmp_path, hub_spec("main"))])
    assert f"The run is not reproducible until you pin it: revision: {shas['v1']}" in capsys.readouterr().err
    manifest = tmp_path / "raw.manifest.json"
    data = json.dumps(run.sections["data"])
    shard_data.main(["--spec-json", data, "--shard-dir", str(tmp_path / "raw"), "--manifest", str(manifest)])
    (source,) = json.loads(manifest.read_text())["details"]["sources"]
    assert source["path"] == f"hf://datasets/{REPO}@{shas['v1']}" and source["records"] == 120
    assert source["hub"]["commit"] == shas["v1"] and source["hub"]["revision"] == "main"
    assert not source["hub"]["pinned"] and source["hub"]["files"][0]["path"] == "data/train.jsonl"


def data_jobs(proc) -> dict:
    jobs = jobs_run(proc)
    return {step: jobs[step] for step in ("shard_data", "tokenize_shard") if jobs[step]}


@pytest.mark.slow
def test_workflow_reruns_the_data_on_a_new_revision_and_why_says_so(hub_env, tmp_path):
    cache, shas = hub_env
    workdir = copy_workflow(tmp_path / "wf")
    for spec in (workdir / "specs").glob("*.yaml"):
        spec.unlink()
    spec = write_spec(workdir, hub_spec("main"))  # refs/main -> v1
    first = snakemake(workdir, "train")
    terminal = first.stdout + first.stderr
    assert f"it resolved to {shas['v1']}" in terminal and f"revision: {shas['v1']}" in terminal
    assert data_jobs(first)["shard_data"] == 1

    spec.write_text(hub_spec(shas["v2"]))  # pinned to the second revision
    lines = snakemake(workdir, "why").stdout.splitlines()
    hub_line = f"data.sources[0].hub ({REPO}): revision {shas['v1'][:12]} -> {shas['v2'][:12]}"
    assert hub_line in [line.strip() for line in lines], lines
    second = snakemake(workdir, "data")
    assert "not reproducible" not in second.stdout + second.stderr
    jobs = data_jobs(second)
    assert jobs["shard_data"] == 1 and jobs["tokenize_shard"] >= 1, jobs
    assert jobs_run(snakemake(workdir, "data")) == {}  # pinned and built: nothing to do

    move_ref(cache, "main", shas["v2"])  # an unpinned spec whose branch moved since training
    spec.write_text(hub_spec("main"))
    lines = [line.strip() for line in snakemake(workdir, "why").stdout.splitlines()]
    assert hub_line in lines and not any(line.startswith("data.sources[0].hub.revision") for line in lines)

    spec.write_text(hub_spec("f" * 40))  # a revision the cache does not have, offline
    proc = snakemake(workdir, "data", "-n", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not jobs_run(proc)
    assert "data.sources[0].hub.revision: revision 'ffffffffffffffffffffffffffffffffffffffff'" in output
    assert re.search(r"pin a cached commit, or run once with the network", output), output[-2000:]
