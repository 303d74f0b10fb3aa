"""Start training with as many processes as the rule's resources ask for (scripts.train_model
calls `relaunch` when its --nproc or --nodes is above 1 and it is not yet a worker).

The number of processes is a Snakemake resource, never a spec key (results do not depend on
where they were computed, the spec does not say where):

    snakemake train --cores 2 --set-resources train_model:nproc=2  # torchrun, 2 processes
    snakemake train --executor slurm --set-resources train_model:nodes=2 train_model:nproc=4

One process runs `python -m scripts.train_model`; several on one node run `torchrun --standalone`
(gloo on CPU, nccl on GPU: the script picks); several nodes (inside a SLURM allocation) run
`srun` with one torchrun per node meeting at a c10d rendezvous on the allocation's first node.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from scripts.common.cli import fail

TRAIN_MODULE = "scripts.train_model"
RDZV_PORT = 29400


def launch_command(
    train_args: list[str],
    *,
    nproc: int,
    nodes: int,
    python: str = "python",
    mpi: str = "srun",
    master_addr: str | None = None,
    job_id: str | None = None,
) -> list[str]:
    """The argv that runs training with `nproc` processes on each of `nodes` nodes."""
    if nproc < 1 or nodes < 1:
        raise ValueError(f"nproc and nodes must be at least 1 (got nproc={nproc}, nodes={nodes})")
    if nproc == 1 and nodes == 1:
        return [python, "-m", TRAIN_MODULE, *train_args]
    torchrun = [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nodes == 1:
        return [*torchrun, "--standalone", "-m", TRAIN_MODULE, "--", *train_args]
    if not master_addr or not job_id:
        raise ValueError("several nodes need the rendezvous host and the job id (a SLURM allocation)")
    port = RDZV_PORT + int(job_id) % 1000 if job_id.isdigit() else RDZV_PORT
    return [
        *shlex.split(mpi),
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        *torchrun,
        f"--nnodes={nodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={master_addr}:{port}",
        f"--rdzv-id={job_id}",
        "-m",
        TRAIN_MODULE,
        "--",  # torchrun would take --log for its own --log-dir
        *train_args,
    ]


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as node[03-05,07] (asks scontrol to expand it)."""
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def is_worker() -> bool:
    """True inside a process that torchrun started (it sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def relaunch(train_args: list[str], nproc: int, nodes: int, mpi: str = "srun"):
    """Replace this process with torchrun (or srun + torchrun) running the training module with
    the same arguments; each worker then trains (is_worker() is true there)."""
    master, job_id = None, os.environ.get("SLURM_JOB_ID")
    if nodes > 1:
        nodelist = os.environ.get("SLURM_JOB_NODELIST")
        if not (job_id and nodelist):
            fail(
                f"nodes={nodes} needs a SLURM allocation (run snakemake with --executor slurm); "
                "on one machine set only nproc: --set-resources train_model:nproc=2"
            )
        master = first_slurm_host(nodelist)
    try:
        cmd = launch_command(
            train_args,
            nproc=nproc,
            nodes=nodes,
            python=sys.executable,
            mpi=mpi,
            master_addr=master,
            job_id=job_id,
        )
    except ValueError as exc:
        fail(f"train_model resources: {exc}")
    print("launching: " + shlex.join(cmd), file=sys.stderr, flush=True)
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)
