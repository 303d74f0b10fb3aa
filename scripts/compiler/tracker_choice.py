"""Which experiment trackers a build logs to: a runtime choice (`--config trackers=...`), never a
spec key. Import-light (stdlib only): rules/common.smk checks the choice at DAG-build time, before
any job runs; the tracking stage (scripts/tracking/) writes the records."""

from __future__ import annotations

import difflib
import importlib.util

# tracker -> (the module it imports, the pinned package that provides it; see requirements.txt)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard==2.21.0"),
    "mlflow": ("mlflow", "mlflow-skinny==3.17.2"),
    "wandb": ("wandb", "wandb==0.31.0"),
}
TRACKERS = tuple(PACKAGES)


class TrackerError(ValueError):
    """A tracker choice that cannot run: an unknown name or a missing package (with the fix)."""


def parse_trackers(value) -> list[str]:
    """The trackers asked for: `a,b` (command line), a YAML list (profile), or nothing/none."""
    if value is None or value is False:
        return []
    names = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        lines = []
        for name in unknown:
            guess = difflib.get_close_matches(name, TRACKERS, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"choose from {', '.join(TRACKERS)}"
            lines.append(f"unknown tracker '{name}' in config trackers: {hint}")
        raise TrackerError("\n".join(lines))
    return list(dict.fromkeys(names))


def check_installed(names, find_spec=importlib.util.find_spec) -> None:
    """Fail before any job runs when a chosen tracker's package is missing, with the pip line."""
    missing = [PACKAGES[n] for n in names if find_spec(PACKAGES[n][0]) is None]
    if missing:
        pins = " ".join(pin for _, pin in missing)
        modules = ", ".join(module for module, _ in missing)
        raise TrackerError(
            f"tracker package not installed: {modules}. Install it into this environment:\n"
            f"    python -m pip install {pins}\n(or drop it from config trackers)"
        )


def choose_trackers(value) -> list[str]:
    names = parse_trackers(value)
    check_installed(names)
    return names
