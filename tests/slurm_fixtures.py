"""Fixtures and helpers for tests that need a real single-node SLURM cluster.

Registered as a pytest plugin in tests/conftest.py (the ``slurm_cluster`` fixture); test
modules import the helpers, e.g. ``from tests.slurm_fixtures import run_snakemake_slurm``.
The cluster comes from ``ci/slurm_cluster.sh`` (see the notes at its top).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "ci" / "slurm_cluster.sh"

# Bounds for one snakemake run: `timeout` sends TERM after SNAKEMAKE_TIMEOUT_S and KILL 30 s
# later (snakemake can hang ignoring SIGTERM when job status queries fail), and
# subprocess.run gets a little longer still as a last guard.
SNAKEMAKE_TIMEOUT_S = 600


def cluster_script(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run ``ci/slurm_cluster.sh ARGS...``; output in .stdout and .stderr, never raises on rc."""
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def running_daemons() -> list[str]:
    """The cluster's daemons (munged mariadbd slurmdbd slurmctld slurmd) now running."""
    proc = cluster_script("running")
    assert proc.returncode == 0, f"ci/slurm_cluster.sh running failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.split()


# The session's cluster outcome, set by the process that started it (pytest's controller under
# pytest-xdist) and inherited by the workers: {"status": line} | {"skip": why} | {"fail": why}.
OUTCOME_ENV = "TUNEMAKE_TEST_SLURM"
_STARTED = pytest.StashKey[list]()


def start_cluster() -> tuple[dict[str, str], list[str]]:
    """Start (or reuse) the local cluster: its outcome and the daemons this call started.

    The daemons running before are recorded first, so that `stop_daemons` stops exactly the
    ones started here; a cluster that was already up is left up. A failed start stops what it
    started and returns {"fail": ...}.
    """
    if os.geteuid() != 0:
        return {"skip": "needs root: ci/slurm_cluster.sh installs packages and starts SLURM daemons"}, []
    if not (shutil.which("apt-get") or shutil.which("slurmctld")):
        return {"skip": "needs a Debian-like system (apt-get) to install SLURM"}, []
    before = running_daemons()
    proc = cluster_script("start", timeout=900)
    started = [name for name in running_daemons() if name not in before]
    if proc.returncode != 0:
        stop_daemons(started)
        return {
            "fail": f"ci/slurm_cluster.sh start failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        }, []
    return {"status": proc.stdout.strip().splitlines()[-1]}, started


def stop_daemons(names: list[str]) -> None:
    if names:
        stop = cluster_script("stop", *names)
        assert stop.returncode == 0, f"ci/slurm_cluster.sh stop failed:\n{stop.stdout}\n{stop.stderr}"


def slurm_tests_selected(config: pytest.Config) -> bool:
    """Whether a `-m` expression could select the SLURM tests (marked slurm and slow)."""
    markexpr = config.option.markexpr
    if not markexpr:
        return True
    try:
        from _pytest.mark.expression import Expression

        return Expression.compile(markexpr).evaluate(lambda name, **_: name in ("slurm", "slow"))
    except Exception:  # a newer pytest's private API: start it, the slow way is still right
        return True


def pytest_configure(config: pytest.Config) -> None:
    """The session's single owner of the cluster starts it before any test (and before
    pytest-xdist starts its workers, which inherit the outcome through OUTCOME_ENV).

    Where SLURM's client is installed, every Snakemake start waits up to 10 s for the SLURM
    plugin's `scontrol show config` unless a controller answers (docs/slurm.md), so the
    cluster runs for the whole session whenever `scontrol` exists or SLURM tests are selected.
    """
    if hasattr(config, "workerinput") or OUTCOME_ENV in os.environ:
        return  # an xdist worker (or a nested pytest): the controller owns the cluster
    if not (shutil.which("scontrol") or slurm_tests_selected(config)):
        return
    outcome, started = start_cluster()
    config.stash[_STARTED] = started
    os.environ[OUTCOME_ENV] = json.dumps(outcome)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop exactly the daemons this session started (they are gone when this returns)."""
    started = config.stash.get(_STARTED, [])
    if started:
        os.environ.pop(OUTCOME_ENV, None)
        stop_daemons(started)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local SLURM cluster's one-line status; the session started it (pytest_configure)."""
    outcome = json.loads(os.environ.get(OUTCOME_ENV, "{}"))
    if "skip" in outcome:
        pytest.skip(outcome["skip"])
    if "fail" in outcome:
        pytest.fail(outcome["fail"], pytrace=False)
    if "status" not in outcome:
        pytest.fail(
            "the SLURM cluster was not started: run pytest without a -m that deselects slurm", pytrace=False
        )
    return outcome["status"]


def snakemake_slurm_command(*extra: str, timeout_s: int = SNAKEMAKE_TIMEOUT_S) -> list[str]:
    """The venv's snakemake on the SLURM executor, under `timeout -k` (see SNAKEMAKE_TIMEOUT_S)."""
    return ["timeout", "-k", "30", str(timeout_s), sys.executable, "-m", "snakemake", *extra]


def venv_env() -> dict[str, str]:
    """This environment with the venv first on PATH: rules call `python`, and jobs inherit it."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run_snakemake_slurm(workdir: Path, *extra: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Run snakemake with ``profile`` (see slurm_test_profile) in ``workdir``, bounded in time.

    Output (stdout and stderr together) in .stdout.
    """
    return subprocess.run(
        snakemake_slurm_command("--profile", str(profile), *extra),
        cwd=workdir,
        env=venv_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SNAKEMAKE_TIMEOUT_S + 60,
    )


def slurm_test_profile(dest: Path, mem_cap_mb: int = 2000) -> Path:
    """profiles/slurm sized for the 2-core test node; returns the profile folder.

    Every mem_mb expression is capped (a 32 GB request would not fit the node), two jobs run
    at once, and job states are polled after 2 s instead of 40 s. Everything else (per-rule
    resources, runtime growing with `attempt`, retries) is the shipped profile.
    """
    config = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for resources in [config["default-resources"], *config["set-resources"].values()]:
        if "mem_mb" in resources:
            resources["mem_mb"] = f"min({resources['mem_mb']}, {mem_cap_mb})"
    config.update({"jobs": 2, "slurm-init-seconds-before-status-checks": 2, "latency-wait": 5})
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def slurm_run_id(snakemake_output: str) -> str:
    """The executor names every job after its run id; it logs "SLURM run ID: <id>"."""
    match = re.search(r"SLURM run ID: (\S+)", snakemake_output)
    assert match, f"no SLURM run ID in snakemake output:\n{snakemake_output}"
    return match.group(1)


def sacct_jobs(job_name: str) -> list[dict[str, str]]:
    """Jobs named ``job_name`` (a snakemake run id) as sacct records them, oldest first.

    Each has JobID, State, Timelimit and Comment (the executor's "rule_<rule>_wildcards_...").
    """
    fields = ["JobID", "JobName", "State", "Timelimit", "Comment"]
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", "now-1days", "-o", ",".join(fields)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    jobs = [dict(zip(fields, line.split("|", len(fields) - 1))) for line in out.splitlines()]
    return sorted((j for j in jobs if j.get("JobName") == job_name), key=lambda j: int(j["JobID"]))


def rule_of(job: dict[str, str]) -> str:
    """The rule a SLURM job ran, from the comment the executor gives it."""
    match = re.match(r"rule_(\w+?)(?:_wildcards_|$)", job["Comment"])
    assert match, f"not a snakemake job comment: {job}"
    return match.group(1)
