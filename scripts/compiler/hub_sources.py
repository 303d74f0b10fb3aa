"""Hub dataset sources: resolve `data.sources[i].hub` to a commit and the files read there.

Resolution reads the Hugging Face hub cache as huggingface_hub lays it out
(`<cache>/datasets--<org>--<name>/refs/<branch-or-tag>` holds a commit sha,
`snapshots/<sha>/<files>` link into `blobs/`). A full commit sha already in the cache costs
no network and no download; with HF_HUB_OFFLINE=1 only the cache is read. Online, a revision
missing from the cache (or a branch, to learn its current commit) goes through
`huggingface_hub.snapshot_download`, imported only then.

Import-light (stdlib only): the Snakefile resolves hub sources at DAG-build time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from pathlib import Path

FULL_SHA = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")  # the readers of single files
SHOWN = 12  # files listed in an error


class HubError(ValueError):
    """A hub source that cannot be resolved; `key` is the spec key under the source's `hub`."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def hub_cache() -> Path:
    """The hub cache huggingface_hub uses: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub,
    XDG_CACHE_HOME/huggingface/hub or ~/.cache/huggingface/hub (its constants, read now)."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(os.path.expanduser(home), "hub")
    return Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_HUB_CACHE") or legacy)))


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("datasets--" + repo.replace("/", "--"))


def cached_commit(folder: Path, revision: str) -> str | None:
    """The commit a revision names in the cache: a full sha with a snapshot, a ref (branch or
    tag) file, or a hex prefix of exactly one snapshot; None when the cache does not have it."""
    if FULL_SHA.fullmatch(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        return commit if (folder / "snapshots" / commit).is_dir() else None
    if re.fullmatch(r"[0-9a-f]{7,39}", revision):
        found = [p.name for p in (folder / "snapshots").glob(revision + "*") if p.is_dir()]
        return found[0] if len(found) == 1 else None
    return None


def cached_revisions(folder: Path) -> str:
    """What the cache holds of a repo, for error messages: refs and snapshots (short shas)."""
    refs = (
        sorted(p for p in (folder / "refs").rglob("*") if p.is_file()) if (folder / "refs").is_dir() else []
    )
    named = [f"{p.relative_to(folder / 'refs').as_posix()} -> {p.read_text().strip()[:12]}" for p in refs]
    snaps = sorted(p.name[:12] for p in (folder / "snapshots").glob("*") if p.is_dir())
    return f"refs: {', '.join(named) or 'none'}; snapshots: {', '.join(snaps) or 'none'}"


def snapshot_files(snapshot: Path) -> list[str]:
    """Relative paths of a snapshot's files (links into blobs/ followed), hidden files left out."""
    out = []
    for path in snapshot.rglob("*"):
        rel = path.relative_to(snapshot).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out.append(rel)
    return sorted(out)


def _listing(files: list[str]) -> str:
    more = f" (and {len(files) - SHOWN} more)" if len(files) > SHOWN else ""
    return ", ".join(files[:SHOWN]) + more if files else "no files"


def _as_list(value) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def matches(path: str, patterns: list[str]) -> bool:
    """huggingface_hub's allow_patterns matching: fnmatch (`*` crosses `/`); `dir/` is `dir/*`."""
    return any(fnmatch.fnmatchcase(path, p + "*" if p.endswith("/") else p) for p in patterns)


def readme_configs(snapshot: Path) -> dict[str, object]:
    """config_name -> data_files of the README's YAML header `configs:` list (empty if none)."""
    readme = snapshot / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    import yaml

    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        return {}
    configs = header.get("configs") if isinstance(header, dict) else None
    if not isinstance(configs, list):
        return {}
    return {
        c["config_name"]: c.get("data_files") for c in configs if isinstance(c, dict) and "config_name" in c
    }


def default_config(configs: dict) -> str:
    if "default" in configs:
        return "default"
    raise HubError(
        "config", f"the README lists configs and none is named default; choose one: {', '.join(configs)}"
    )


def config_patterns(data_files, split: str | None) -> tuple[list[str], bool]:
    """(patterns, whether they are already the split's) of a README config's data_files: a
    glob, a list of globs, or a list of {split, path} entries."""
    entries = _as_list(data_files) if not isinstance(data_files, dict) else [data_files]
    if entries and all(isinstance(e, dict) for e in entries):
        chosen = [e for e in entries if split is None or e.get("split") == split]
        return [p for e in chosen for p in _as_list(e.get("path"))], split is not None
    return [str(e) for e in entries], False


def in_split(path: str, split: str) -> bool:
    """The hub's naming of split files: a folder named after it, or train.jsonl, train-0000.parquet."""
    *folders, name = path.split("/")
    return split in folders or re.match(rf"{re.escape(split)}([-_.]|$)", name) is not None


def select_files(hub: dict, snapshot: Path) -> list[str]:
    """The data files a hub source reads: data_files globs, else its config's (README configs,
    else the folder named after it), else every data file; then narrowed to the split."""
    present = snapshot_files(snapshot)
    data = [f for f in present if f.lower().endswith(DATA_SUFFIXES)]
    split, split_done, key = hub.get("split"), False, "data_files"
    if hub.get("data_files"):
        patterns = _as_list(hub["data_files"])
        chosen = [f for f in present if matches(f, patterns)]
    elif hub.get("config") or readme_configs(snapshot):
        key, configs = "config", readme_configs(snapshot)
        if not hub.get("config"):  # as `datasets` does: the README's default config
            hub = {**hub, "config": default_config(configs)}
        if configs:
            if hub["config"] not in configs:
                raise HubError(
                    "config", f"no config {hub['config']!r}; the README's configs are: {', '.join(configs)}"
                )
            patterns, split_done = config_patterns(configs[hub["config"]], split)
        else:
            patterns = [hub["config"] + "/"]
        chosen = [f for f in data if matches(f, patterns)]
    else:
        key, patterns, chosen = "split", ["(all data files)"], data
    if not chosen:
        raise HubError(key, f"{patterns} match no file; the snapshot holds: {_listing(present)}")
    if split and not split_done:
        narrowed = [f for f in chosen if in_split(f, split)]
        if not narrowed:
            raise HubError(
                "split",
                f"no file of split {split!r} (a folder {split}/ or a file named {split}.* or "
                f"{split}-*) among: {_listing(chosen)}; set hub.data_files to choose files",
            )
        chosen = narrowed
    return chosen


_SHA_MEMO: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a cached file. An LFS blob is named by its sha256 (huggingface_hub stores it
    under blobs/<sha256>), so it is not read again; other files (small: git blobs) are hashed."""
    target = path.resolve()
    if SHA256.fullmatch(target.name) and target.parent.name == "blobs":
        return target.name
    stat = target.stat()
    key = (str(target), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(target, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def download_hint(repo: str, revision: str) -> str:
    return (
        f"run once with the network (unset HF_HUB_OFFLINE), or download it: "
        f"hf download {repo} --repo-type dataset --revision {revision} "
        f"(huggingface-cli download in older huggingface_hub), or point HF_HUB_CACHE at a cache that holds it"
    )


def download(hub: dict, cache: Path) -> None:
    """Fetch the revision's files (the data_files globs, or all) into the cache; network."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(
            hub["repo"],
            repo_type="dataset",
            revision=hub["revision"],
            allow_patterns=_as_list(hub.get("data_files")) + ["README.md"] if hub.get("data_files") else None,
            cache_dir=cache,
        )
    except Exception as exc:  # noqa: BLE001 - any hub failure is reported as the spec's problem
        raise HubError(
            "revision", f"cannot download dataset {hub['repo']} at {hub['revision']!r}: {exc}"
        ) from None


def locate(hub: dict, cache: Path) -> str:
    """The commit of a hub source's revision, downloading first when online and needed."""
    repo, revision = hub["repo"], hub["revision"]
    folder = repo_folder(cache, repo)
    commit = cached_commit(folder, revision)
    pinned = FULL_SHA.fullmatch(revision) is not None
    if not offline() and (commit is None or not pinned):  # a branch may have moved
        download(hub, cache)
        commit = cached_commit(folder, revision)
    if commit is not None:
        return commit
    if not folder.is_dir():
        raise HubError(
            "repo",
            f"dataset {repo} is not in the hub cache ({cache}) and HF_HUB_OFFLINE is set; "
            + download_hint(repo, revision),
        )
    raise HubError(
        "revision",
        f"revision {revision!r} of dataset {repo} is not in the hub cache ({folder}; "
        f"{cached_revisions(folder)}); pin a cached commit, or {download_hint(repo, revision)}",
    )


_RESOLVED: dict[tuple, dict] = {}
_WARNED: set[tuple] = set()


def resolve(hub: dict, cache: Path | None = None) -> dict:
    """{repo, revision, commit, pinned, snapshot, files: [{path, sha256}]} of a hub source
    (memoised per process: the DAG, `why` and the keys resolve each source once)."""
    cache = cache or hub_cache()
    memo = (str(cache), repr(sorted(hub.items())))
    if memo not in _RESOLVED:
        commit = locate(hub, cache)
        snapshot = repo_folder(cache, hub["repo"]) / "snapshots" / commit
        try:
            chosen = select_files(hub, snapshot)
        except HubError as exc:
            raise HubError(exc.key, f"dataset {hub['repo']} at commit {commit[:12]}: {exc}") from None
        files = [{"path": f, "sha256": file_sha256(snapshot / f)} for f in chosen]
        pinned = FULL_SHA.fullmatch(hub["revision"]) is not None
        _RESOLVED[memo] = {
            "repo": hub["repo"],
            "revision": hub["revision"],
            "commit": commit,
            "pinned": pinned,
            "snapshot": str(snapshot),
            "files": files,
        }
    return _RESOLVED[memo]


def warn_unpinned(resolved: dict, where: str) -> None:
    """Say once per process that a branch or tag makes the run unreproducible, with the sha to pin."""
    if resolved["pinned"] or (where, resolved["commit"]) in _WARNED:
        return
    _WARNED.add((where, resolved["commit"]))
    print(
        f"warning: {where}.revision {resolved['revision']!r} of dataset {resolved['repo']} is not a "
        f"commit sha; it resolved to {resolved['commit']}. The run is not reproducible until you "
        f"pin it: revision: {resolved['commit']}",
        file=sys.stderr,
    )


def resolve_data(data: dict) -> list[dict | None]:
    """Per data source, its resolution (None for a file source); raises HubError with `index`."""
    out = []
    for index, source in enumerate(data["sources"]):
        if "hub" not in source:
            out.append(None)
            continue
        try:
            out.append(resolve(source["hub"]))
        except HubError as exc:
            exc.index = index
            raise
        warn_unpinned(out[-1], f"data.sources[{index}].hub")
    return out


def hub_key(data: dict) -> list | None:
    """What the data key adds for hub sources: each one's commit and files' sha256 (None when
    the data has no hub source, so file-only keys stay as they were)."""
    resolved = resolve_data(data)
    if not any(resolved):
        return None
    return [
        r and {"commit": r["commit"], "files": {f["path"]: f["sha256"] for f in r["files"]}} for r in resolved
    ]


def source_paths(resolved: dict) -> list[str]:
    """The files a resolved hub source reads, as paths into its snapshot."""
    return [str(Path(resolved["snapshot"]) / f["path"]) for f in resolved["files"]]
