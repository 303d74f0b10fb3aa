"""Fixtures and helpers for tests that need a real single-node SLURM cluster.

A plain module (not a conftest): test modules import what they use, e.g.
``from slurm_fixtures import slurm_cluster, run_snakemake_slurm``.
The cluster comes from ``ci/slurm_cluster.sh`` (see the notes at its top).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "ci" / "slurm_cluster.sh"

# Bounds for one snakemake run: `timeout` sends TERM after SNAKEMAKE_TIMEOUT_S and KILL 30 s
# later (snakemake can hang ignoring SIGTERM when job status queries fail), and
# subprocess.run gets a little longer still as a last guard.
SNAKEMAKE_TIMEOUT_S = 600
SNAKEMAKE_SLURM_ARGS = [
    "--executor",
    "slurm",
    "--jobs",
    "2",
    # The default (40 s) makes every tiny workflow take minutes.
    "--slurm-init-seconds-before-status-checks",
    "2",
    # Jobs without mem_mb would ask for no --mem and get DefMemPerCPU from slurm.conf.
    "--default-resources",
    "mem_mb=500",
]


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Start (or reuse) the local SLURM cluster; return its one-line status.

    The cluster is left running after the session: `start` is idempotent and quick
    when everything is already up, and CI machines are thrown away afterwards.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: ci/slurm_cluster.sh installs packages and starts SLURM daemons")
    if not (shutil.which("apt-get") or shutil.which("slurmctld")):
        pytest.skip("needs a Debian-like system (apt-get) to install SLURM")
    proc = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "start"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"ci/slurm_cluster.sh start failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout.strip().splitlines()[-1]


def run_snakemake_slurm(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's snakemake on the SLURM executor in ``workdir`` (bounded in time)."""
    cmd = [
        "timeout",
        "-k",
        "30",
        str(SNAKEMAKE_TIMEOUT_S),
        sys.executable,
        "-m",
        "snakemake",
        *SNAKEMAKE_SLURM_ARGS,
        *extra,
    ]
    return subprocess.run(
        cmd,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SNAKEMAKE_TIMEOUT_S + 60,
    )


def slurm_run_id(snakemake_output: str) -> str:
    """The executor names every job after its run id; it logs "SLURM run ID: <id>"."""
    match = re.search(r"SLURM run ID: (\S+)", snakemake_output)
    assert match, f"no SLURM run ID in snakemake output:\n{snakemake_output}"
    return match.group(1)


def sacct_states(job_name: str) -> list[str]:
    """States of the jobs named ``job_name`` (sacct -n -X, parsable: names are not cut)."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", "now-1days", "-o", "JobName,State"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [
        state for name, _, state in (line.partition("|") for line in out.splitlines()) if name == job_name
    ]
