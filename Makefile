# gru-encoder: every set-up step is here, so a fresh clone needs only `make train` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN ?= runs/default

.PHONY: help venv java train smoke archive serve test openapi clean

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

train: $(VENV)/.installed  ## train the default encoder into runs/default (about 9 min on 2 cores)
	$(PY) -m training.train --out-dir $(RUN)

smoke: $(VENV)/.installed  ## the whole training pipeline in seconds, into runs/smoke
	$(PY) -m training.train --smoke

java:  ## make sure Java (for TorchServe) is installed
	@scripts/ensure-java.sh

$(RUN)/config.json:
	$(MAKE) train RUN=$(RUN)

archive: $(VENV)/.installed $(RUN)/config.json  ## package the run as model_store/gru_encoder.mar
	$(PY) -m training.archive --run-dir $(RUN)

serve: archive java  ## serve the model with TorchServe on 127.0.0.1:8080 (trains first if no run exists)
	@echo 'Serving on http://127.0.0.1:8080 (Ctrl-C to stop). Try:'
	@echo "  curl -s http://127.0.0.1:8080/predictions/gru_encoder -H 'Content-Type: application/json' -d '{\"texts\": [\"i am cold .\"], \"return\": [\"hidden\"]}'"
	LOG_LOCATION=logs METRICS_LOCATION=logs $(VENV)/bin/torchserve --start --foreground --ncs \
	  --model-store model_store --ts-config config.properties --disable-token-auth

test: $(VENV)/.installed java  ## run the test suite (creates the venv first)
	$(PY) -m pytest

openapi: $(VENV)/.installed  ## regenerate docs/openapi.json from the pydantic models
	$(PY) -m gru_encoder.openapi > docs/openapi.json

clean:  ## remove build outputs (keeps runs/ and the venv)
	rm -rf model_store/*.mar logs .pytest_cache **/__pycache__

# ---- deployment (docs/DEPLOY.md): docker compose, GPU by default, CPU variant with up-cpu
.PHONY: compose-test up up-cpu down
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
CPU_FILES := -f docker-compose.yml -f docker-compose.cpu.yml

compose-test: $(VENV)/.installed  ## build the image, run the compose stack for real, tear it down (~6 min)
	scripts/compose-test.sh

up: archive  ## docker compose up: the GPU variant, inference on 127.0.0.1:8080
	$(COMPOSE) up -d --build

up-cpu: archive  ## docker compose up: the CPU variant (hosts without a GPU)
	$(COMPOSE) $(CPU_FILES) up -d --build

down:  ## stop and remove the compose stack (either variant, Locust included)
	$(COMPOSE) $(CPU_FILES) --profile loadtest down

# ---- load tests and benchmark (docs/PERFORMANCE.md)
.PHONY: loadtest bench
URL ?= http://127.0.0.1:8080
LOADTEST_USERS ?= 8
LOADTEST_TIME ?= 30s

loadtest: $(VENV)/.installed  ## locust, headless, against a running server (URL=..., default 127.0.0.1:8080), 30 s
	PYTHONPATH=. $(VENV)/bin/locust -f loadtests/locustfile.py --headless --only-summary -H $(URL) \
	  -u $(LOADTEST_USERS) -r $(LOADTEST_USERS) -t $(LOADTEST_TIME)

bench: archive java  ## limit vs TorchServe vs LitServe under locust; table + JSON/Markdown/PNG in loadtests/results/ (~11 min)
	$(PY) -m loadtests.bench --run-dir $(RUN)
