PY := .venv/bin/python
export WANDB_MODE ?= offline

.PHONY: install test test-fast train bench lint clean

install:  ## virtualenv + editable package with dev extras (torch pinned: wheels on local disk)
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"

test:  ## whole suite, slow end-to-end runs included
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

train:  ## the main job: MADE on binarized MNIST with the defaults, ending with the test NLL
	.venv/bin/made-train

bench:
	$(PY) -m made_exp.bench

lint:
	.venv/bin/ruff check src tests

clean:
	rm -rf logs multirun outputs wandb .pytest_cache
