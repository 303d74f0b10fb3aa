# Reference log-probs (objectives with a reference model: dpo): the base model's summed log-probs
# of every pair's chosen and rejected responses, computed once per tokens + reference, and read
# by every run that shares them (a beta or learning-rate sweep runs this job once).
rule reference_logps:
    input:
        tokens=reference_tokens,
        base=reference_base,
        env=ENV,
    output:
        logps="results/reference/{rkey}/logps.parquet",
        manifest="results/reference/{rkey}/logps.manifest.json",
    log:
        "logs/reference/{rkey}/reference_logps.log",
    benchmark:
        "benchmarks/reference/{rkey}/reference_logps.tsv"
    conda:
        CONDA_ENV
    threads: reference_threads
    params:
        spec=reference_json,
        tokens=tokens_file,
    shell:
        """
        python -m scripts.reference_logps --spec-json {params.spec:q} --base {input.base:q} \
            --tokens {params.tokens:q} --out {output.logps:q} --manifest {output.manifest:q} \
            --environment {input.env:q} >{log:q} 2>&1
        """


# Training: the number of processes is a resource, not a spec key (results should not depend on
# where they ran): --set-resources train_model:nproc=2 runs torchrun with 2 processes;
# train_model:nodes=2 (inside SLURM, with train_model:tasks=2 train_model:mpi=srun so that the
# SLURM executor allocates one task per node) runs one torchrun per node through srun.
# `mpi` is deliberately not a default resource: the SLURM plugin refuses an mpi job with 1 task.
# Progress: `--progress 3 3>&2` hands the script the job's stderr from before the redirection into
# the log (Snakemake's terminal; under --executor slurm the job's SLURM log) for a line every few
# seconds (step/total, loss, tok/s, ETA); the log keeps everything (scripts/common/progress.py).
rule train_model:
    input:
        tokens=run_tokens,
        base=run_base,
        env=ENV,
        # The audit gates training: a failed audit stops the run before any step is trained.
        audit=run_audit,
        reference=run_reference,
    output:
        model=directory("results/runs/{run}/train/model"),
        log="results/runs/{run}/train/log.jsonl",
        manifest="results/runs/{run}/train.manifest.json",
    log:
        "logs/runs/{run}/train_model.log",
    benchmark:
        "benchmarks/runs/{run}/train_model.tsv"
    conda:
        CONDA_ENV
    threads: run_threads
    resources:
        nproc=1,
        nodes=1,
    params:
        spec=run_slice("train_model"),
        tokens=tokens_file,
        work_dir=run_work_dir,
        reference=reference_arg,
    shell:
        """
        python -m scripts.train_model --nproc {resources.nproc} --nodes {resources.nodes} \
            --spec-json {params.spec:q} --base {input.base:q} \
            --tokens {params.tokens:q} --work-dir {params.work_dir:q} --out {output.model:q} \
            --log {output.log:q} --manifest {output.manifest:q} --audit {input.audit:q} \
            --environment {input.env:q} {params.reference} --run {wildcards.run:q} \
            --progress 3 3>&2 >{log:q} 2>&1
        """
