# presa-bench. `make demo` and `make test` each do the whole set-up first (make install).
SHELL := /bin/bash
# The interpreter of the venv: empty = python3.11 on PATH, else a CPython 3.11 installed by uv, else
# one line on how to get one (scripts/find-python.sh; the pins need 3.11: docs/install.md).
PYTHON ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.presa-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
PROFILE ?= smoke
TASK ?= BallCircle

.PHONY: install demo test lock clean-venv

install: $(STAMP)

# The stamp depends on everything that defines the environment: a no-op when it is up to date.
$(STAMP): requirements/lock.txt requirements/nodeps.txt pyproject.toml
	@test -x $(BIN)/python || { py=$$(scripts/find-python.sh $(PYTHON)) && "$$py" -m venv $(VENV); }
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps -r requirements/lock.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import bench, dsrl, osrl, fsrl, safety_gymnasium, bullet_safety_gym" 2>/dev/null
	@touch $@
	@echo "presa-bench installed in $(VENV)"

# The demo: PreSa on the shipped BallCircle dataset with the short-budget setting measured in
# docs/presa.md (2,000 steps, 600 of them BC warm-up at lr 1e-3, batch 32 segments): about a minute.
DEMO_FLAGS ?= --set train_steps=2000 --set warmup_steps=600 --set warmup_lr=1e-3 --set batch_size=32
demo: install
	$(BIN)/presa-bench run --task $(TASK) --algo presa --profile smoke $(DEMO_FLAGS)

test: install
	$(BIN)/python -m pytest -q

# Regenerate the lock from a fresh resolution of requirements/base.txt (needs the package registry).
lock:
	rm -rf /tmp/presa-lock-venv && py=$$(scripts/find-python.sh $(PYTHON)) && "$$py" -m venv /tmp/presa-lock-venv
	/tmp/presa-lock-venv/bin/pip install -q torch==2.13.0
	/tmp/presa-lock-venv/bin/pip install -q -r requirements/base.txt
	/tmp/presa-lock-venv/bin/pip install -q --no-deps -r requirements/nodeps.txt
	{ echo "# Full pinned lock of the project environment (pip freeze of a working install, Python 3.11)."; \
	  echo "# Installed with --no-deps after torch; regenerate with 'make lock'."; \
	  /tmp/presa-lock-venv/bin/pip freeze | grep -v -E '^torch==|^-e|presa'; } > requirements/lock.txt

clean-venv:
	rm -rf $(VENV)

# ---- Benchmark harness (bench/sweep.py, bench/report.py; docs/harness.md) ----
# `make reproduce-paper PROFILE=paper EXECUTOR=slurm` (cluster), PROFILE=bullet (8 Bullet tasks, one
# 2-core machine overnight) or PROFILE=smoke (minutes). Reruns resume: finished cells are skipped.
REPRO_RESULTS ?= results/$(PROFILE)
EXECUTOR ?=
SWEEP_FLAGS ?=
.PHONY: reproduce-paper

# First stage: every dataset the grid needs that is not found is downloaded from DSRL's Hugging Face
# dataset, or (offline) built with `data collect --profile $(COLLECT_PROFILE)`; one resumable unit
# per task, on Slurm too (EXECUTOR=slurm: one job per task). FETCH= skips the stage.
COLLECT_PROFILE ?= quick
FETCH ?= --fetch-missing --collect-profile $(COLLECT_PROFILE)
reproduce-paper: install
	$(if $(FETCH),$(BIN)/presa-bench sweep --config configs/$(PROFILE).yaml --results $(REPRO_RESULTS) $(if $(EXECUTOR),--executor $(EXECUTOR)) $(SWEEP_FLAGS) $(FETCH) --fetch-only)
	$(BIN)/presa-bench sweep --config configs/$(PROFILE).yaml --results $(REPRO_RESULTS) $(if $(EXECUTOR),--executor $(EXECUTOR)) $(SWEEP_FLAGS)
	$(BIN)/presa-bench report --results $(REPRO_RESULTS) --out $(REPRO_RESULTS)/report

# `make sweep-NAME` runs configs/NAME.yaml into results/NAME and reports it, e.g. make sweep-ballcircle.
sweep-%: install
	$(BIN)/presa-bench sweep --config configs/$*.yaml --results results/$* $(if $(EXECUTOR),--executor $(EXECUTOR)) $(SWEEP_FLAGS)
	$(BIN)/presa-bench report --results results/$* --out results/$*/report

# `make ablations`: every PreSa ablation config (configs/ablations/*.yaml; docs/presa.md, "Ablations")
# into results/ablations/NAME, then the ablation table and plot (results/ablations/report/).
# Subsets: make ablations ABLATIONS="default cpl-alone" ABLATION_TASKS=BallRun. Reruns resume.
ABLATIONS ?= $(sort $(basename $(notdir $(wildcard configs/ablations/*.yaml))))
ABLATION_TASKS ?= BallCircle,BallRun
.PHONY: ablations
ablations: install
	set -e; for name in $(ABLATIONS); do \
	  $(BIN)/presa-bench sweep --config configs/ablations/$$name.yaml --tasks $(ABLATION_TASKS) --results results/ablations/$$name $(if $(EXECUTOR),--executor $(EXECUTOR)) $(SWEEP_FLAGS); \
	done
	$(BIN)/python benchmarks/ablation_table.py results/ablations --out results/ablations/report

# ---- Throughput benchmark (issue 9; a benchmark, not a test): PreSa steps/s and seed-steps/s for 1, 3
# and 10 cells trained as one batched model vs OSRL's BC on the same data and the same number of
# state-action pairs, one CPU thread, 4 interleaved rounds (~2 min on BallCircle, most of it the
# reference log-likelihoods of 14 cells). `bench` is also a directory, hence .PHONY.
# GPU mode (a lent GPU machine): make bench-gpu, which adds compiled (CUDA-graph) variants.
BENCH_FLAGS ?= --threads 1 --seconds 4 --seeds 1,3,10
BENCH_GPU_FLAGS ?= --device cuda --seconds 8 --seeds 1,3,9,10 --compile off,reduce-overhead
.PHONY: bench bench-gpu
bench: install
	$(BIN)/python benchmarks/bench_presa.py --task $(TASK) $(BENCH_FLAGS)
bench-gpu: install
	$(BIN)/python benchmarks/bench_presa.py --task $(TASK) $(BENCH_GPU_FLAGS) --json bench-gpu.json

# ---- Safety-Gymnasium end to end (issue 16): a tiny collected dataset (smoke budget) on one
# navigation and one velocity task, synthetic feedback, smoke runs of presa and bc-safe, evaluation
# in the simulator, stored and reported. Measured time in docs/datasets.md. Segments of 20 steps and
# 100 queries: the smoke data is 8 episodes (Hopper's untrained policies fall within 100 steps).
SG_SMOKE_DIR ?= results/sg-smoke
SG_SMOKE_TASKS ?= PointGoal1 HopperVelocity
SG_SMOKE_FLAGS ?= --profile smoke --num-queries 100 --set feedback.segment_length=20
.PHONY: sg-smoke
sg-smoke: install
	set -e; for t in $(SG_SMOKE_TASKS); do \
	  $(BIN)/presa-bench data collect --task $$t --profile smoke --dataset-dir $(SG_SMOKE_DIR)/datasets; \
	  for a in presa bc-safe; do \
	    $(BIN)/presa-bench run --task $$t --algo $$a $(SG_SMOKE_FLAGS) --dataset $(SG_SMOKE_DIR)/datasets --results $(SG_SMOKE_DIR)/results; \
	  done; \
	done
	$(BIN)/presa-bench report --results $(SG_SMOKE_DIR)/results --out $(SG_SMOKE_DIR)/report

