# The targets of the lm-evaluation-harness benchmarks (evaluate.benchmarks; rules in
# rules/benchmark.smk): one score per model and task, keyed by content
# (scripts/compiler/benchmark_rules.py), so runs that share a base score it once.
from scripts.compiler.benchmark_rules import score_slice, unknown_harness_tasks
from scripts.compiler.spec import short_hash as benchmark_hash


def _benchmark_targets():
    """bkey -> (score slice, model folder); run -> [{task, base, tuned}] (their scores.json)."""
    scores, pairs = {}, {}
    for name, run in RUNS.items():
        keys, entries = KEYS[name], run.sections["evaluate"]["benchmarks"]
        models = (
            ("base", {"base": keys["model"]}, f"results/models/{keys['model']}/model"),
            (
                "tuned",
                {"merged": keys["train"], "merge": SLICES[name]["merge_model"]},
                f"results/runs/{name}/merged",
            ),
        )
        for entry in entries:
            pair = {"task": entry["task"]}
            for side, model, folder in models:
                value = score_slice(entry, model, run.sections["train"]["threads"])
                bkey = benchmark_hash(value)
                scores.setdefault(bkey, (value, folder))
                pair[side] = f"results/benchmarks/{bkey}/scores.json"
            pairs.setdefault(name, []).append(pair)
    return scores, pairs


_UNKNOWN = unknown_harness_tasks(
    [
        (run.spec_file, index, entry["task"])
        for run in RUNS.values()
        for index, entry in enumerate(run.sections["evaluate"]["benchmarks"])
    ]
)
if _UNKNOWN:
    raise WorkflowError("invalid spec:\n" + "\n".join(sorted(set(_UNKNOWN))))
BENCHMARKS, RUN_BENCHMARKS = _benchmark_targets()


wildcard_constraints:
    bkey="[0-9a-f]{12}",


def benchmark_json(wildcards):
    return slice_file(BENCHMARKS[wildcards.bkey][0])


def benchmark_model(wildcards):
    return BENCHMARKS[wildcards.bkey][1]


def benchmark_threads(wildcards):
    return BENCHMARKS[wildcards.bkey][0]["threads"]


def benchmark_task_files(wildcards):
    """A local task's YAML, data and Python files: a missing one is reported as an input."""
    identity = BENCHMARKS[wildcards.bkey][0]["identity"]
    if "file" not in identity:
        return []
    return [identity["file"], *identity["data_sha256"], *identity["code_sha256"]]


def run_benchmark_scores(wildcards):
    return [p[s] for p in RUN_BENCHMARKS[wildcards.run] for s in ("base", "tuned")]


def run_benchmark_pairs(wildcards):
    return slice_file(RUN_BENCHMARKS[wildcards.run])


def run_benchmarks(wildcards):
    """The run's benchmark table, for the card, the plots and the comparison (none if unasked)."""
    if wildcards.run not in RUN_BENCHMARKS:
        return []
    return f"results/runs/{wildcards.run}/benchmarks.json"


def benchmark_runs(pattern):
    return [pattern.format(run=name) for name in RUN_BENCHMARKS]
