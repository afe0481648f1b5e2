# The README's two commands: `make demo` and `make test`. Both set up .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ladarun-installed

RUNS   ?= outputs

.PHONY: help demo test test-all test-gpu test-slurm lint format bench table1 figures clean-outputs
.DEFAULT_GOAL := help

help:  ## list the targets (this)
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-13s %s\n", $$1, $$2}'

# constraints.txt: the exact, tested versions of everything installed (pyproject.toml has ranges).
# `make test CONSTRAINTS=` installs without it, keeping a torch you installed first (README).
CONSTRAINTS ?= constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	@touch $(STAMP)

.PHONY: constraints
constraints:  ## rewrite constraints.txt from .venv (after an upgrade has passed make test-all)
	( echo "# The exact set the tests ran on; make installs it (pip install -c constraints.txt). Rewritten by make constraints."; \
	  $(PY) -m pip freeze --disable-pip-version-check --exclude-editable ) > constraints.txt

demo: $(STAMP)  ## the embedded default: digits, small CNN, quick protocol, no download
	$(VENV)/bin/ladarun

# The suites run on the CPU even on a GPU machine: their expectations are the CPU's, and two
# test processes would share GPU 0. The GPU's own checks are the `gpu` tests (make test-gpu).
test: $(STAMP)  ## the fast suite (on the CPU: GPUs hidden)
	CUDA_VISIBLE_DEVICES= $(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP)  ## everything, slow tests included (on the CPU: GPUs hidden)
	CUDA_VISIBLE_DEVICES= $(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)  ## the tests that need a GPU (tests marked gpu; they skip without CUDA)
	$(PY) -m pytest -q -m gpu

test-slurm: $(STAMP)  ## the Slurm launcher on a one-node cluster it starts (needs slurmctld, slurmd, munge; skips without)
	$(PY) scripts/test_slurm.py

lint: $(STAMP)  ## ruff (lint, complexity, format) on every Python file, mypy on src/, the import layers (part of .ci/run)
	$(VENV)/bin/ruff check src tests benchmarks scripts conf examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts conf examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)  ## apply ruff's formatter and its safe fixes
	$(VENV)/bin/ruff format src tests benchmarks scripts conf examples
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts conf examples

bench: $(STAMP)  ## whole-run wall time/memory (benchmarks/results.md), then the Time column, loop overhead and per-row memory (benchmarks/bench.md)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

table1: $(STAMP)  ## Table 1 (with the paper's values) from every run under $(RUNS): $(RUNS)/table1.{md,csv,tex}
	$(VENV)/bin/ladarun-table --paper $(RUNS)

figures: $(STAMP)  ## Figure 3 and 6a from every run under $(RUNS): $(RUNS)/figures/*/*.{png,pdf}
	$(VENV)/bin/ladarun-figures $(RUNS)

clean-outputs:  ## remove outputs/ and multirun/ (your own runs: careful)
	rm -rf outputs multirun
