# gru-encoder: every set-up step is here, so a fresh clone needs only `make train` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN ?= runs/default

.PHONY: help venv train smoke test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# The venv is rebuilt when pyproject.toml (the pins) changes. torch==2.13.0 is the CPU wheel on
# these machines' disk; elsewhere pip fetches the same pinned version from PyPI.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (or make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.3.1
	$(PY) -m pip install --quiet -e '.[serve,dev]'
	touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned dependencies

train: $(VENV)/.installed  ## train the default encoder into runs/default (about 13 min on 2 cores)
	$(PY) -m training.train --out-dir $(RUN)

smoke: $(VENV)/.installed  ## the whole training pipeline in seconds, into runs/smoke
	$(PY) -m training.train --smoke

test: $(VENV)/.installed  ## run the test suite (creates the venv first)
	$(PY) -m pytest

clean:  ## remove build outputs (keeps runs/ and the venv)
	rm -rf model_store/*.mar .pytest_cache **/__pycache__
