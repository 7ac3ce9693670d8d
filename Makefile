PY := .venv/bin/python
export WANDB_MODE ?= offline

.PHONY: install constraints test test-fast docs docs-serve train sweep-local search-local slurm-up slurm-down wandb-sync bench lint clean

install:  ## virtualenv + editable package with dev extras, at the tested versions (constraints.txt)
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch first, by itself: this machine's pip takes these two from local disk (a CUDA build otherwise downloads)
	$(PY) -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"

constraints:  ## re-pin the tested set from this venv (after the suite passed with newer packages)
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

test:  ## whole suite, slow end-to-end runs included
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

docs:  ## the documentation site in site/, built strictly (a broken link or a failing block fails); needs MADE_DATA_DIR
	NO_MKDOCS_2_WARNING=1 PATH=$(CURDIR)/.venv/bin:$$PATH .venv/bin/mkdocs build --strict

docs-serve:  ## the site on http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 PATH=$(CURDIR)/.venv/bin:$$PATH .venv/bin/mkdocs serve

train:  ## the main job: MADE on binarized MNIST with the defaults, ending with the test NLL
	.venv/bin/made-train

# A grid over SWEEP, JOBS jobs at a time on this machine (each with CPUS/JOBS threads).
SWEEP ?= data=dna model.num_masks=1,2,4,8
JOBS ?= 2
CPUS := $(shell nproc)
sweep-local:  ## parallel local grid: make sweep-local SWEEP="data=dna model.num_masks=1,8 seed=0,1" JOBS=2
	OMP_NUM_THREADS=$$(( $(CPUS) / $(JOBS) > 0 ? $(CPUS) / $(JOBS) : 1 )) .venv/bin/made-train -m \
		hydra/launcher=parallel hydra.launcher.n_jobs=$(JOBS) $(SWEEP)

TRIALS ?= 20
search-local:  ## Optuna TPE search (lr, width, masks) on dna, JOBS trials at a time
	OMP_NUM_THREADS=$$(( $(CPUS) / $(JOBS) > 0 ? $(CPUS) / $(JOBS) : 1 )) .venv/bin/made-train -m \
		hydra/sweeper=optuna_tpe hydra/launcher=parallel hydra.launcher.n_jobs=$(JOBS) \
		hydra.sweeper.n_jobs=$(JOBS) hydra.sweeper.n_trials=$(TRIALS) data=dna

# A single-node SLURM cluster on this machine (root; apt-get install slurm-wlm munge), the one
# tests/test_slurm.py starts: eval "$$(make -s slurm-up)" points sbatch/squeue/made-train at it.
SLURM_DIR ?= .slurm
slurm-up:  ## start munged, slurmctld and slurmd with their state in SLURM_DIR; prints what to export
	@$(PY) tests/slurm_cluster.py up $(SLURM_DIR)

slurm-down:
	@$(PY) tests/slurm_cluster.py down $(SLURM_DIR)

wandb-sync:  ## upload the offline W&B runs under logs/ (after `wandb login`); synced runs are skipped
	find $${MADE_LOG_DIR:-logs} -type d -name 'offline-run-*' -exec .venv/bin/wandb sync {} +

bench:
	$(PY) -m made_exp.cli.bench

LINTED := src tests experiments docs/hooks
lint:  ## ruff: the lint rules and the formatting (what .ci/run and pre-commit check)
	.venv/bin/ruff check $(LINTED)
	.venv/bin/ruff format --check $(LINTED)

clean:
	rm -rf logs multirun outputs wandb .pytest_cache
