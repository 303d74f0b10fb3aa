"""GRPO through the real workflow (issue 16): the GRPO demo's start model (the demo speller
stopped early, examples/grpo/sft_early.yaml: the session's shared build, copied), then a GRPO run
that starts from it (`model: {from_run: sft_early}`) with an exact-match, a chrF and a user
reward: the log has each term's mean, the total, the KL and the completion length per step, the
rewards rise, the report compares the start model and the tuned one, an edit to a user reward file
reruns training only (counted with `snakemake -n`), and a killed run resumes to the same weights.
The rewards themselves and the spec's refusals: tests/test_grpo_rewards.py."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow_fixtures import SFT_EARLY, copy_built, jobs_run, kill_at_first_checkpoint, snakemake

GRPO_STEPS = 24
USER_REWARDS = '''
NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def number_words(completions, **kwargs):
    """The share of a completion's words that are number words."""
    return [sum(w in NUMBER_WORDS for w in c.split()) / max(len(c.split()), 1) for c in completions]
'''


@pytest.fixture(scope="module")
def chain(sft_early_build, tmp_path_factory):
    """The demo's SFT run stopped early (it spells some numbers, not all: the shared build), then
    a GRPO run from it, trained and evaluated. The specs folder holds the two runs' specs."""
    workdir = copy_built(sft_early_build, tmp_path_factory.mktemp("grpo") / "wf")
    (workdir / "specs/demo.yaml").unlink()
    early = yaml.safe_load((workdir / SFT_EARLY).read_text())
    (workdir / "specs/sft_early.yaml").write_text((workdir / SFT_EARLY).read_text())
    (workdir / "rewards.py").write_text(USER_REWARDS)
    grpo = {
        **early,
        "model": {"from_run": "sft_early"},
        "train": {
            **early["train"],
            "objective": "grpo",
            "learning_rate": 1e-3,
            "max_steps": GRPO_STEPS,
            "per_device_batch_size": 64,  # 8 prompts x 8 completions
            "logging_steps": 1,
            "save_steps": GRPO_STEPS,
            "grpo": {
                "num_generations": 8,
                "max_completion_length": 12,
                # the early-stopped demo is right when greedy but unsure: sampled from its whole
                # vocabulary its answers are noise; top_k 2 keeps them among its two best guesses
                # (as examples/grpo/grpo_digits.yaml). Measured: the total reward's mean over the
                # first third of the steps 1.23, over the last third 1.35
                "temperature": 1.0,
                "top_k": 2,
                "rewards": [
                    {"metric": "exact_match"},
                    {"metric": "chrf"},
                    {"function": "number_words", "rewards_file": "rewards.py", "weight": 0.5},
                ],
            },
        },
    }
    (workdir / "specs/grpo.yaml").write_text(yaml.safe_dump(grpo, sort_keys=False))
    ran = jobs_run(snakemake(workdir, "evaluate"))
    assert ran["train_model"] == 1 and not ran["shard_data"], ran  # the parent came built
    return workdir


def read_log(workdir, run="grpo"):
    return [
        json.loads(line)
        for line in (workdir / f"results/runs/{run}/train/log.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_grpo_logs_each_term_the_total_the_kl_and_the_length(chain):
    steps = [e for e in read_log(chain) if "loss" in e]
    assert [e["step"] for e in steps] == list(range(1, GRPO_STEPS + 1))
    for key in ("rewards/exact_match/mean", "rewards/chrf/mean", "rewards/number_words/mean", "reward", "kl"):
        assert all(key in e for e in steps), key
    assert all(1 <= e["completions/mean_length"] <= 12 for e in steps)
    first = steps[0]
    weighted = (
        first["rewards/exact_match/mean"]
        + first["rewards/chrf/mean"]
        + 0.5 * first["rewards/number_words/mean"]
    )
    assert first["reward"] == pytest.approx(weighted, abs=1e-5)  # the total is the weighted sum
    manifest = json.loads((chain / "results/runs/grpo/train.manifest.json").read_text())
    assert any("runs user code" in w and "rewards.py" in w for w in manifest["details"]["warnings"])
    log_text = (chain / "logs/runs/grpo/train_model.log").read_text()
    assert "warning: train.grpo.rewards term 'number_words' runs user code" in log_text


@pytest.mark.slow
def test_the_rewards_rise(chain):
    totals = [e["reward"] for e in read_log(chain) if "reward" in e]
    third = len(totals) // 3
    first, last = sum(totals[:third]) / third, sum(totals[-third:]) / third
    assert last > first + 0.05, (first, last, totals)


@pytest.mark.slow
def test_the_report_compares_the_start_model_with_the_tuned_one(chain):
    report = json.loads((chain / "results/runs/grpo/evaluate/report.json").read_text())
    sft = json.loads((chain / "results/runs/sft_early/evaluate/report.json").read_text())
    # the GRPO run's base is the SFT run's tuned model: the same greedy answers, the same scores
    assert report["metrics"]["base"]["exact_match"] == sft["metrics"]["tuned"]["exact_match"]
    assert "exact_match" in report["metrics"]["tuned"] and "chrf" in report["metrics"]["tuned"]


@pytest.mark.slow
def test_plot_training_draws_the_reward_curves(chain, tmp_path):
    from scripts import plot_training

    series = plot_training.reward_series(read_log(chain))
    assert list(series) == ["total", "chrf", "exact_match", "number_words"]
    assert len(series["total"]) == GRPO_STEPS
    plot_training.main(
        [
            "--log",
            str(chain / "results/runs/grpo/train/log.jsonl"),
            "--run",
            "grpo",
            "--out",
            str(tmp_path / "p.png"),
        ]
    )
    assert (tmp_path / "p.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_user_reward_file_edit_reruns_training_not_data(chain):
    assert not jobs_run(snakemake(chain, "-n", "evaluate")), "nothing changed, nothing runs"
    rewards = chain / "rewards.py"
    text = rewards.read_text()
    try:
        rewards.write_text(text + "\n# weigh the number words the same\n")
        planned = jobs_run(snakemake(chain, "-n", "evaluate"))
    finally:
        rewards.write_text(text)
    assert planned["train_model"] == 1 and planned["evaluate_model"] == 1, planned
    data_steps = ("shard_data", "tokenize_shard", "audit_data", "base_model")
    assert not any(planned[step] for step in data_steps), planned


@pytest.mark.slow
def test_killed_grpo_training_resumes_to_the_same_weights(chain, monkeypatch):
    """Kill -9 during GRPO training; the rerun resumes from the newest checkpoint (sampling's
    random state restored with it) and ends with the same adapter bytes as an uninterrupted run."""
    import subprocess
    from pathlib import Path

    from scripts.compiler.spec import load_specs

    spec = yaml.safe_load((chain / "specs/grpo.yaml").read_text())
    spec["train"] = {**spec["train"], "max_steps": 12, "save_steps": 4, "lr_scheduler": "constant"}
    (chain / "specs/grpo_resume.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        monkeypatch.chdir(chain)  # the rewards file is found, and hashed, relative to the workflow
        runs = {run.name: run for run in load_specs(sorted(Path("specs").glob("*.yaml")))}
        work = chain / f"results/work/train/{runs['grpo_resume'].keys['train']}"
        target = "results/runs/grpo_resume/train.manifest.json"
        killed_after = kill_at_first_checkpoint(chain, target, work)
        assert not (chain / target).exists()
        resumed = snakemake(chain, target, "--rerun-incomplete")
        assert jobs_run(resumed)["train_model"] == 1
        manifest = json.loads((chain / target).read_text())
        assert manifest["counts"]["resumed_from_step"] >= killed_after
        assert 12 > manifest["counts"]["steps_run"] == 12 - manifest["counts"]["resumed_from_step"]
        adapter = chain / "results/runs/grpo_resume/train/model/adapter_model.safetensors"
        resumed_weights = adapter.read_bytes()
        subprocess.run(["rm", "-rf", str(work)], check=True)
        snakemake(chain, target, "--forcerun", "train_model")
        assert "starting fresh" in (chain / "logs/runs/grpo_resume/train_model.log").read_text()
        assert adapter.read_bytes() == resumed_weights
    finally:
        (chain / "specs/grpo_resume.yaml").unlink()


@pytest.mark.slow
def test_the_train_step_fails_with_one_line_on_a_nan_reward(chain, tmp_path):
    """Where the user looks (issue 30, point 3): a GRPO run from the same start (its data and start
    model came built with the chain, copied) with a reward that returns NaN fails the train step
    at its first step with one line naming the term, its file and the record."""
    workdir = copy_built(chain, tmp_path / "wf")
    (workdir / "rewards.py").write_text(
        "def score(completions, **kwargs):\n    return [float('nan')] * len(completions)\n"
    )
    grpo = yaml.safe_load((workdir / "specs/grpo.yaml").read_text())
    grpo["train"] = {**grpo["train"], "max_steps": 2, "per_device_batch_size": 8}
    rewards = [{"function": "score", "rewards_file": "rewards.py"}]
    grpo["train"]["grpo"] = {"num_generations": 4, "max_completion_length": 4, "rewards": rewards}
    (workdir / "specs/grpo.yaml").write_text(yaml.safe_dump(grpo, sort_keys=False))
    proc = snakemake(workdir, "results/runs/grpo/train.manifest.json", check=False, timeout=300)
    assert set(jobs_run(proc)) == {"train_model"}, jobs_run(proc)  # nothing else to build
    log = (workdir / "logs/runs/grpo/train_model.log").read_text()  # the profile prints it on failure
    assert proc.returncode != 0 and "Traceback" not in log + proc.stderr, log[-3000:]
    (line,) = [line for line in log.splitlines() if line.startswith("error:")]
    assert line.startswith(
        "error: rewards.py: reward term 'score' (function 'score') returned nan for record "
    )
    assert line.endswith("(training step 1)")
    assert not (workdir / "results/runs/grpo/train.manifest.json").exists()
