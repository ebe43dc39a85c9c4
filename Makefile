# The front door: `make demo`, `make test`, `make test-fast`, `make lint`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Re-install only when pyproject.toml or the pins change (content hash, not mtimes).
SETUP_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-$(SETUP_HASH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: setup demo demo-data test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP):
	@echo "==> setting up $(VENV) (pip, pinned by constraints.txt)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.setup-*
	@touch $@
	@echo "==> set-up done"

demo-data: setup
	$(VENV)/bin/refsam demo-data --out datasets/demo --scale small

demo: demo-data
	@echo "==> demo finished"

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	@set -e; for b in bench/*.py; do echo "==> $$b"; $(PY) $$b --quick; done

clean:
	rm -rf datasets/demo outputs mlruns .pytest_cache
