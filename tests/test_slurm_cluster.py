"""The local SLURM test cluster itself (ci/slurm_cluster.sh and the ``slurm_cluster`` fixture).

Snakemake on SLURM is tested with the real workflow in tests/test_slurm_workflow.py. This checks
what the fixture's teardown relies on: the script tracks every daemon it started, so that the
fixture can stop exactly those at the end of the session.

    python -m pytest -m slurm tests/test_slurm_cluster.py     # as root; starts the cluster
"""

from __future__ import annotations

import pytest

from tests.slurm_fixtures import cluster_script, running_daemons


@pytest.mark.slurm
def test_cluster_is_up_and_tracks_all_its_daemons(slurm_cluster: str) -> None:
    assert "controller UP" in slurm_cluster, slurm_cluster
    assert running_daemons() == ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]
    assert cluster_script("status").returncode == 0
    # Names are checked before anything is stopped.
    bad = cluster_script("stop", "slurmd", "no-such-daemon")
    assert bad.returncode != 0 and "unknown daemon 'no-such-daemon'" in bad.stderr, bad
    assert running_daemons() == ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]
