"""requirements.txt and environment.yml pin the same packages at the same versions."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def requirement_pins(lines) -> dict:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line}"
            pins[name.lower()] = version
    return pins


def test_conda_environment_has_the_same_pins():
    pip_file = requirement_pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert requirement_pins(pip_section) == pip_file
    assert "python=3.11" in env["dependencies"]


def test_torch_is_the_cpu_capable_pin():
    assert requirement_pins((REPO / "requirements.txt").read_text().splitlines())["torch"] == "2.13.0"
