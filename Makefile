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
# The pipeline's ephemeral Prefect keeps its state in the project (unless PREFECT_HOME is set).
PREFECT_LOCAL := PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect}

.PHONY: setup demo demo-data demo-cluster ablation test test-fast lint format bench screenshots clean

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
	$(VENV)/bin/refsam ingest --all --raw datasets/demo/raw --out datasets/demo/shards --workers 2 --shard-size 32
	@echo "==> retrain flow: ingest (cached) -> train -> evaluate -> champion"
	$(PREFECT_LOCAL) $(VENV)/bin/refsam pipeline --config configs/demo-tiny-cpu.yaml
	@echo "==> demo finished"

# The nightly deployment once against local stand-ins of a team's services (S3 server,
# MLflow server with artifacts in the bucket, Prefect server + process worker, Dask
# cluster), all started and stopped here (flows/cluster.py; logs in .cluster/logs).
demo-cluster: demo-data
	$(PY) -m flows.cluster --config $${CLUSTER_CONFIG:-configs/demo-tiny-cpu.yaml}

# Ablation of the dense path, the track token and the temporal path on the tiny demo model:
# one pipeline run per step and seed into one MLflow experiment, then the seed-averaged
# table (mean ± sd [min–max] per eval set and expression subset). A step is a dense_path
# (none|sentence|dense_attention|hierarchical); "-notrack" turns model.tracking off,
# "-window" turns the motion window on (model.temporal=window), "-flow" the window with its
# block-matched pixel motion (model.temporal=flow); otherwise temporal=none.
# e.g. make ablation ABLATION_STEPS="hierarchical hierarchical-flow" ABLATION_SEEDS="0 1 2 3"
ABLATION_STEPS ?= sentence dense_attention hierarchical hierarchical-notrack hierarchical-window hierarchical-flow
ABLATION_SEEDS ?= 0
ABLATION_CONFIG ?= configs/demo-tiny-cpu.yaml
ABLATION_EXPERIMENT ?= refsam-ablation
ABLATION_SET ?=

ablation: demo-data
	@set -e; for seed in $(ABLATION_SEEDS); do for step in $(ABLATION_STEPS); do \
	  path=$${step%%-*}; track=true; temporal=none; \
	  case "$$step" in *-notrack*) track=false;; esac; \
	  case "$$step" in *-window*) temporal=window;; *-flow*) temporal=flow;; esac; \
	  echo "==> ablation step $$step seed $$seed: model.dense_path=$$path model.tracking=$$track model.temporal=$$temporal"; \
	  $(PREFECT_LOCAL) $(VENV)/bin/refsam pipeline --config $(ABLATION_CONFIG) \
	    --set model.dense_path=$$path --set model.tracking=$$track --set model.temporal=$$temporal \
	    --set train.seed=$$seed \
	    --set tracking.experiment=$(ABLATION_EXPERIMENT) --set tracking.registered_model=$(ABLATION_EXPERIMENT) \
	    --set train.run_name=ablation-$$step-s$$seed $(foreach o,$(ABLATION_SET),--set $(o)); \
	done; done
	$(VENV)/bin/refsam runs ablation --experiment $(ABLATION_EXPERIMENT) --last $$(( $(words $(ABLATION_STEPS)) * $(words $(ABLATION_SEEDS)) ))

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# The README's MLflow UI screenshots, from the browser test (needs chromium, see README).
screenshots: setup
	$(PY) -m pytest -q tests/flows/test_mlflow_ui.py --ui-screenshots docs/img

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	@set -e; for b in bench/[!_]*.py; do echo "==> $$b"; $(PY) $$b --quick; done
	@echo "==> bench/loader.py --real-size"; $(PY) bench/loader.py --real-size --quick
	@echo "==> bench/loader.py --url local"; $(PY) bench/loader.py --url local --quick

clean:
	rm -rf datasets/demo outputs mlruns .prefect .pytest_cache
