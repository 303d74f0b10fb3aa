"""A step's own error reaches the terminal with the README's `snakemake export --cores 2`.

Every step's script ends a failure with one `error: ...` paragraph (scripts.common.cli.fail) on
stderr, which its rule redirects into logs/. The workflow profile profiles/default/config.yaml,
which Snakemake 9 reads next to the Snakefile on every run, sets `show-failed-logs`, so
Snakemake prints a failed job's log under its "Error in rule" block. These tests run the real
workflow in a copy that includes profiles/ and look for the script's message in what the user
sees (stdout and stderr), not in the log file.
"""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from tests.workflow_fixtures import REPO, copy_built, copy_workflow, jobs_run, snakemake

TRUNCATED = (
    '{"prompt": "Spell 1:", "completion": "one"}\n'
    '{"prompt": "Spell 2:", "completion": "two"}\n'
    '{"prompt": "Spell 3:", "completion": "three"\n'
)


def workflow_with_profiles(dest):
    """A workflow copy with profiles/ (the default workflow profile lives there)."""
    workdir = copy_workflow(dest)
    shutil.copytree(REPO / "profiles", workdir / "profiles", dirs_exist_ok=True)
    return workdir


def edit_demo(workdir, edit) -> None:
    path = workdir / "specs/demo.yaml"
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def error_lines(log_text: str) -> list[str]:
    return [line for line in log_text.splitlines() if line.startswith("error: ")]


def test_the_default_profile_only_shows_failed_logs_and_combines_with_the_others(tmp_path):
    """Snakemake 9 finds profiles/default by itself; it adds show-failed-logs and nothing else,
    alone or next to --profile profiles/local or profiles/slurm (whose settings all stay)."""
    workdir = workflow_with_profiles(tmp_path / "wf")
    assert yaml.safe_load((workdir / "profiles/default/config.yaml").read_text()) == {
        "show-failed-logs": True
    }
    from snakemake.cli import parse_args

    def parsed(*argv):
        return {k: repr(v) for k, v in vars(parse_args(["export", *argv])[1]).items()}

    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for extra in ([], ["--profile", "profiles/local"], ["--profile", "profiles/slurm"]):
            with_default, without = parsed(*extra), parsed(*extra, "--workflow-profile", "none")
            differ = {k for k in with_default if with_default[k] != without[k]}
            differ -= {"workflow_profile", "max_jobs_per_timespan"}  # the flag itself; an object without repr
            assert differ == ({"show_failed_logs"} if not extra else set()), (extra, differ)
            assert with_default["show_failed_logs"] == "True", extra
        local, slurm = parsed("--profile", "profiles/local"), parsed("--profile", "profiles/slurm")
        assert local["rerun_incomplete"] == local["printshellcmds"] == "True" and local["retries"] == "0"
        assert slurm["executor"] == "'slurm'" and slurm["retries"] == "1" and slurm["latency_wait"] == "60"
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_a_truncated_json_line_is_reported_on_the_terminal(tmp_path):
    workdir = workflow_with_profiles(tmp_path / "wf")
    (workdir / "data/bad").mkdir()
    (workdir / "data/bad/bad.jsonl").write_text(TRUNCATED)
    edit_demo(workdir, lambda spec: spec["data"]["sources"][0].update(path="data/bad/bad.jsonl"))

    proc = snakemake(workdir, "export", check=False, timeout=300)
    terminal = proc.stdout + proc.stderr
    assert proc.returncode != 0, terminal[-3000:]
    assert "Error in rule shard_data:" in terminal, terminal[-3000:]
    message = "error: data/bad/bad.jsonl:3: malformed JSON: Expecting ',' delimiter at column 45"
    (log,) = (workdir / "logs/data").glob("*/shard_data.log")
    assert error_lines(log.read_text()) == [message]
    assert message in terminal, terminal[-3000:]
    assert "Traceback" not in terminal
    assert not list((workdir / "results/data").glob("*/raw.manifest.json"))


@pytest.mark.slow
def test_a_failed_smoke_test_is_reported_on_the_terminal(demo_build, tmp_path):
    """The demo (the session's build, copied, with profiles/) given a smoke prompt it cannot
    answer: only the smoke test reruns, and its one-line failure reaches the terminal."""
    workdir = copy_built(demo_build, tmp_path / "wf")
    shutil.copytree(REPO / "profiles", workdir / "profiles", dirs_exist_ok=True)

    def a_wrong_answer(spec):
        spec["export"]["smoke_prompts"] = [{"prompt": "Spell 9051:", "expected": "not the answer"}]

    edit_demo(workdir, a_wrong_answer)
    proc = snakemake(workdir, "export", check=False, timeout=600)
    terminal = proc.stdout + proc.stderr
    assert proc.returncode != 0, terminal[-3000:]
    assert "Error in rule smoke_test:" in terminal, terminal[-3000:]
    (message,) = error_lines((workdir / "logs/runs/demo/smoke_test.log").read_text())
    assert message.startswith("error: smoke test failed: ") and "expected 'not the answer'" in message
    assert message in terminal, terminal[-3000:]
    assert "Traceback" not in terminal
    assert not (workdir / "results/runs/demo/smoke_test.manifest.json").exists()
    assert "train_model" not in jobs_run(proc) and "evaluate_model" not in jobs_run(proc)
