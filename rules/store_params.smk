"""The shared store's functions (docs/store.md; the pull and publish rules are in store.smk).
With `--config store=PATH` (or TUNEMAKE_STORE), a content-keyed artifact missing here whose
object in the store is intact is pulled, by a pull job instead of its own step. An artifact
built here stays built here; one pulled before stays pulled. Per-machine steps (environment)
are never pulled. A successful run publishes what the store lacks (push_after_build, called
from the Snakefile's onsuccess). Included by the Snakefile after keyed_params.smk."""

from scripts.compiler.store import (
    PULLED,
    REFUSED,
    StoreError,
    choose_store,
    merged_artifact,
    merged_key,
    model_artifact,
    publish,
    pull_choice,
    tokens_artifact,
    train_artifact,
)

# A runtime choice: in no key, no spec, no manifest, no params. The pull and publish scripts
# read it from the environment, so a pulled file stays up to date when the store is not named.
STORE = choose_store(config)
# Without a store and with nothing pulled before, the pull rules match no file at all.
PULLABLE = "" if STORE or PULLED.is_dir() else "(?!)"


def _pulled_or_built(artifact):
    """No inputs when `artifact` is pulled; else a path nothing makes, so that Snakemake takes
    the next producer in the ruleorder (store.smk), the artifact's own step."""
    if pull_choice(STORE, artifact):
        return []
    return [f"store-has-no-intact-copy/{artifact.kind}/{artifact.key}"]


def pull_tokens_input(wildcards):
    return _pulled_or_built(tokens_artifact(wildcards.tkey, wildcards.shard))


def pull_model_input(wildcards):
    return _pulled_or_built(model_artifact(wildcards.mkey))


def pull_train_input(wildcards):
    return _pulled_or_built(train_artifact(wildcards.run, KEYS[wildcards.run]["train"]))


def run_merged_key(wildcards):
    return merged_key(
        KEYS[wildcards.run]["train"], SLICES[wildcards.run]["merge_model"]
    )


def pull_merged_input(wildcards):
    return _pulled_or_built(merged_artifact(wildcards.run, run_merged_key(wildcards)))


def store_artifacts(existing_only=False):
    """Every keyed artifact of the specs' runs; with `existing_only`, those built here (the token
    shards from the data manifest on disk, not through the shard_data checkpoint)."""
    found = {}
    for name, keys in KEYS.items():
        if existing_only:
            shards = _shards_on_disk(keys["data"])
        else:
            shards = [Path(p).stem for p in tokens_of(keys["data"], keys["tokens"])]
        for shard in shards:
            found[(keys["tokens"], shard)] = tokens_artifact(keys["tokens"], shard)
        found[keys["model"]] = model_artifact(keys["model"])
        found[name] = train_artifact(name, keys["train"])
        merged = merged_key(keys["train"], SLICES[name]["merge_model"])
        found[(name, "merged")] = merged_artifact(name, merged)
    return [a for a in found.values() if not existing_only or a.is_here()]


def _shards_on_disk(dkey):
    import json

    manifest = Path(f"results/data/{dkey}/raw.manifest.json")
    if not manifest.exists():
        return []
    return [
        shard["hash"] for shard in json.loads(manifest.read_text())["details"]["shards"]
    ]


def publish_store_input(wildcards):
    if not STORE:
        _refuse(
            "publish_store: no store named. Run `snakemake publish_store --cores 2 "
            "--config store=/path/to/store` (or set TUNEMAKE_STORE). Nothing was published."
        )
    return [str(a.manifest) for a in store_artifacts()]


def publish_store_list(wildcards):
    return slice_file([a.as_dict() for a in store_artifacts()])


def push_after_build():
    """After a successful run with a store: publish the keyed artifacts here that the store lacks,
    and replace the objects refused this run by their rebuilt copies."""
    if not STORE:
        return
    refused = [a for a in REFUSED if a.is_here()]
    for artifact in refused + store_artifacts(existing_only=True):
        try:
            status = publish(STORE, artifact, check_present=artifact in refused)
        except StoreError as exc:
            status = f"not published ({exc})"
        if status != "present":
            print(f"store: {status} {artifact.kind} {artifact.key}", file=sys.stderr)
