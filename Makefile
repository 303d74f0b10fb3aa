# tunemake: the two commands.
#   make export   set up .venv (pinned), then run `snakemake export` on every spec in specs/
#   make test     set up .venv, then lint and the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# pytest-xdist workers: one more than the cores, since the SLURM tests mostly wait on the scheduler
TEST_WORKERS ?= 3
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: export demo-dpo demo-grpo demo-bench verify test test-fast lint bench docs clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

export: venv
	$(BIN)/snakemake export --cores $(CORES)

# SFT -> DPO: the demo run, then examples/dpo_style.yaml on top of it (docs/training.md: Preference tuning).
demo-dpo: venv
	$(BIN)/snakemake export --cores $(CORES) --config specs=specs/demo.yaml,examples/dpo_style.yaml

# The demo speller scored on the two lm-evaluation-harness tasks in tasks/ (docs/evaluation.md: Harness benchmarks):
# results/runs/demo_benchmarks/benchmarks.md, the comparison table, the plots and the card.
demo-bench: venv
	$(BIN)/snakemake --cores $(CORES) --config specs=examples/demo_benchmarks.yaml

# The GRPO demo (docs/training.md: GRPO): the demo stopped early, then GRPO with an exact-match reward.
demo-grpo: venv
	$(BIN)/snakemake evaluate --cores $(CORES) --config specs=examples/grpo/sft_early.yaml,examples/grpo/grpo_digits.yaml

# Rebuild in a clean copy and compare with tunemake.lock (docs/publish.md).
VERIFY_UNTIL ?= smoke_test
verify: venv
	$(BIN)/snakemake verify --cores $(CORES) --config verify_until=$(VERIFY_UNTIL)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules/
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --lint

# Tests run on $(TEST_WORKERS) pytest-xdist workers, a module on one worker (tests/conftest.py).
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-fast: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not slow"

# Every bench prints its ratios against a baseline timed in the same run (docs/benchmarks.md).
# report_screenshot needs Debian's chromium; gpu_qlora says so and exits where no GPU is present.
BENCHES := noop eval_generation train_throughput dpo_throughput grpo_throughput data_prep store report_screenshot gpu_qlora
bench: venv
	@for b in $(BENCHES); do echo "== bench/$$b.py"; HF_HUB_OFFLINE=1 $(BIN)/python bench/$$b.py || exit 1; done

# docs/architecture.md from the step, objective, metric and GGUF type tables (a test fails when stale).
docs: venv
	$(BIN)/python -m scripts.common.architecture_page

clean:
	rm -rf results logs benchmarks .snakemake
