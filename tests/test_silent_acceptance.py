"""Silent acceptance (issue 14 item 7): the workflow says what is wrong instead of carrying on.

A data source deleted after its data was built used to give "Nothing to be done" (and an
export would train on the records of a file that is gone); a second snakemake started while
one runs used to be told to rerun with --rerun-incomplete, which then failed on the lock.
(Records whose text fields hold NaN or Infinity: tests/test_record_text.py and cases 81-83.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_fixtures import another_run_holding, copy_workflow, jobs_run, snakemake

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock")


def data_key(workdir: Path) -> str:
    code = (
        "from scripts.compiler.spec import load_specs; print(load_specs(['specs/demo.yaml'])[0].keys['data'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def test_a_source_deleted_after_its_data_was_built_stops_the_run_before_any_job(tmp_path):
    """Without the check in rules/common.smk data_sources, `snakemake -n export` plans training
    on the shards of the deleted file and exits 0 (`snakemake data` says "Nothing to be done")."""
    workdir = copy_workflow(tmp_path / "wf")
    manifest = f"results/data/{data_key(workdir)}/raw.manifest.json"
    snakemake(workdir, manifest)
    assert not list((workdir / ".snakemake/tunemake/runs").glob("*")), "a finished run stays registered"
    (workdir / "data/demo/spell_digits.jsonl").unlink()
    for args in (("-n", "export"), (manifest,)):
        proc = snakemake(workdir, *args, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output[-3000:]
        assert (
            "data source not found: data/demo/spell_digits.jsonl (data.sources[0].path in specs/demo.yaml"
            in output
        ), output[-3000:]
        assert "Restore the file, or remove the source from the spec" in output
        assert "Nothing to be done" not in output and "Traceback (most recent" not in output
        assert not jobs_run(proc) and "Job stats" not in output


def test_a_second_run_is_told_another_run_holds_the_workflow_and_a_stale_lock_is_not(tmp_path):
    """A first run keeps a job in flight (a rule added to this copy only: its output exists and
    is marked incomplete, like any job's half-written output). A second run, and one with
    --rerun-incomplete, are told another run is working here, with its pid, instead of
    Snakemake's advice to use --rerun-incomplete or --unlock (fails without the filter in
    rules/common.smk and the Snakefile's onstart: IncompleteFilesException, LockException).
    Once the first run is killed (-9: no cleanup), the same commands get Snakemake's own
    messages again, which are right for a crash."""
    workdir = copy_workflow(tmp_path / "wf")
    with another_run_holding(workdir) as first:
        for args in (("results/hold.txt",), ("--rerun-incomplete", "results/hold.txt")):
            proc = snakemake(workdir, *args, check=False)
            output = proc.stdout + proc.stderr
            assert proc.returncode != 0, output[-3000:]
            assert f"another snakemake run is working in this folder: pid {first.pid} on " in output, output[
                -3000:
            ]
            assert "seem to be incomplete" not in output and "Directory cannot be locked" not in output
            assert not jobs_run(proc)
    proc = snakemake(workdir, "results/hold.txt", check=False)
    assert "another snakemake run" not in proc.stderr and "--rerun-incomplete flag" in proc.stderr, (
        proc.stderr[-3000:]
    )
    proc = snakemake(workdir, "--rerun-incomplete", "results/hold.txt", check=False)
    assert "another snakemake run" not in proc.stderr and "--unlock argument" in proc.stderr, proc.stderr[
        -3000:
    ]
    assert proc.returncode != 0 and not jobs_run(proc)
