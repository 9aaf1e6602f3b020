# gru-encoder: every set-up step is here, so a fresh clone needs only `make serve` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN ?= runs/default

.PHONY: help venv java nginx bench-tools train smoke archive serve check test release-check openapi gateway-conf clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# The venv is rebuilt when pyproject.toml (the pins) changes. torch==2.13.0 is the CPU wheel on
# these machines' disk; elsewhere pip fetches the same pinned version from PyPI.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (or make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.3.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned dependencies

train: $(VENV)/.installed  ## train the default encoder again into runs/default (about 8 min on 2 cores)
	$(PY) -m training.train --out-dir $(RUN)

smoke: $(VENV)/.installed  ## the whole training pipeline in seconds, into runs/smoke
	$(PY) -m training.train --smoke

# TorchServe's batch-fill agent (java/BatchFillAgent.java): the launcher hands it to TorchServe's Java
# when batch_fill is queued, the default.
AGENT := build/batch-fill-agent.jar
java:  ## make sure a JDK 17 is installed (TorchServe's Java; javac) and build the batch-fill agent
	@scripts/ensure-java.sh
	@$(MAKE) --no-print-directory $(AGENT)

$(AGENT): java/BatchFillAgent.java scripts/build-agent.sh
	scripts/build-agent.sh $@

bench-tools:  ## make sure wrk (the bench's low-overhead load generator, a Debian package) is installed
	@scripts/ensure-wrk.sh

# runs/default is committed (the shipped model); another RUN is trained when it has no config.json yet.
$(RUN)/config.json:
	$(MAKE) train RUN=$(RUN)

archive: $(VENV)/.installed $(RUN)/config.json  ## package the run as model_store/gru_encoder.mar
	$(PY) -m training.archive --run-dir $(RUN)

# Serving settings (workers, batching, threads, limits, ports): flags of gru_encoder.host.serve or GRU_ENCODER_*
# variables, e.g. make serve PORT=8090 SERVE_ARGS="--workers 1 --management-port 8091".
PORT ?= 8080
SERVE_ARGS ?=
serve: archive java nginx  ## serve the public API on 127.0.0.1:8080: the gateway's nginx in front of TorchServe (PORT=..., SERVE_ARGS=...)
	@echo 'Serving on http://127.0.0.1:$(PORT) (Ctrl-C to stop). Try:'
	@echo "  curl -s http://127.0.0.1:$(PORT)/predictions/gru_encoder -H 'Content-Type: application/json' -d '{\"texts\": [\"i am cold .\"], \"return\": [\"hidden\"]}'"
	$(PY) -m gru_encoder.host.serve --gateway local --port $(PORT) $(SERVE_ARGS)

nginx:  ## make sure nginx is installed (make serve's local gateway; Debian's nginx-light)
	@scripts/ensure-nginx.sh

check: $(VENV)/.installed  ## the fast inner loop: unit and in-process tests, no server (about 1 min)
	$(PY) -m pytest tests/unit

test: $(VENV)/.installed java nginx bench-tools  ## every test: unit, a real TorchServe, the real compose stack (what CI runs)
	$(PY) -m pytest

release-check: $(VENV)/.installed java nginx smoke  ## a release under load: add, canary, promote, rollback, retire (docs/VERSIONS.md; about 2.5 min)
	$(PY) -m loadtests.release_sequence --serve --run runs/smoke $(RELEASE_ARGS)

openapi: $(VENV)/.installed  ## regenerate docs/openapi.json from the route table, the contract and the request schema
	$(PY) -m gru_encoder.api.openapi > docs/openapi.json

gateway-conf: $(VENV)/.installed  ## regenerate the gateway's routes and error pages (docker/gateway/generated) from the route table
	$(PY) -m gru_encoder.api.gateway_conf --write docker/gateway/generated

clean:  ## remove build outputs (keeps runs/ and the venv)
	rm -rf model_store/*.mar logs build .pytest_cache **/__pycache__

# ---- deployment (docs/DEPLOY.md): docker compose, GPU by default, CPU variant with up-cpu.
# Only the gateway is published (127.0.0.1:8080); it wants an API key from secrets/api_key.
.PHONY: compose-test docker-setup docker-ready up up-cpu down api-key gateway-check rolling-restart _gateway-hint
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
CPU_FILES := -f docker-compose.yml -f docker-compose.cpu.yml
GATEWAY_URL := http://$(or $(GATEWAY_BIND),127.0.0.1):$(or $(GATEWAY_PORT),8080)

compose-test: $(VENV)/.installed  ## build the images, run the compose stack and its gateway for real, tear down (tests/e2e)
	$(PY) -m pytest tests/e2e

docker-setup:  ## Debian host, as root: install Docker and Compose, start dockerd, make the base image (each step announced)
	scripts/docker-bootstrap.sh >/dev/null

# What `make up` needs before it builds: a compose command and a daemon that answers. Without them it
# stops here with the commands to run, instead of "docker-compose: command not found".
docker-ready:
	@if ! { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }; then \
	  echo "Docker Compose is not installed. On Debian or Ubuntu, as root:"; \
	  echo "  apt-get update && apt-get install -y docker.io docker-compose"; \
	  echo "or run: make docker-setup   (the same, then starts dockerd and makes the base image; it says each step first)"; \
	  exit 1; fi
	@if ! timeout 20 docker info >/dev/null 2>&1; then \
	  echo "No Docker daemon answers. Start it (systemctl start docker, or dockerd &), or run: make docker-setup"; \
	  exit 1; fi

# A random key, made once: the folder is 0700 (yours alone on this host), the file 0644 so that the
# gateway's uid 1001 can read it through the secret mount. More keys: one per line (rotation).
secrets/api_key:
	@mkdir -p secrets && chmod 0700 secrets
	@umask 022 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > $@.tmp && mv $@.tmp $@
	@echo "wrote a new API key to $@"

api-key: secrets/api_key  ## write secrets/api_key (a random gateway API key) unless it exists

# A running stack is brought to new images or settings one TorchServe replica at a time
# (scripts/compose-roll.sh), so `GRU_ENCODER_WORKERS=1 make up-cpu` fails no request.
# The images are built through scripts/stage-build.sh: this machine's certificate authorities (and for
# the CPU variant its torch wheel) staged into the build context for the build and removed after it,
# the build's RUN steps on the host's network. --force-rm: a failed step leaves no stopped container
# (the legacy builder of docker-compose 1.29; BuildKit makes none).
BUILD_FLAGS = $(shell $(COMPOSE) build --help 2>/dev/null | grep -q -- '--force-rm' && echo --force-rm)

up: docker-ready archive secrets/api_key  ## docker compose up: the GPU variant behind the gateway on 127.0.0.1:8080
	scripts/stage-build.sh $(COMPOSE) build $(BUILD_FLAGS)
	scripts/compose-roll.sh up $(COMPOSE)
	@scripts/gateway-check.sh $(GATEWAY_URL) 300
	@$(MAKE) --no-print-directory _gateway-hint

up-cpu: docker-ready archive secrets/api_key  ## docker compose up: the CPU variant (hosts without a GPU)
	scripts/stage-build.sh --cpu $(COMPOSE) $(CPU_FILES) build $(BUILD_FLAGS)
	scripts/compose-roll.sh up $(COMPOSE) $(CPU_FILES)
	@scripts/gateway-check.sh $(GATEWAY_URL) 300
	@$(MAKE) --no-print-directory _gateway-hint

rolling-restart:  ## restart TorchServe's two replicas one at a time, each healthy before the next (no request fails)
	scripts/compose-roll.sh restart $(COMPOSE) $(CPU_FILES)

gateway-check:  ## one GET /health through the published port, from this host (what a client reaches); exit 1 if no 200
	@scripts/gateway-check.sh $(GATEWAY_URL)

_gateway-hint:
	@echo "The gateway answers on $(GATEWAY_URL) ($(COMPOSE) ps shows the services); API key in $(CURDIR)/secrets/api_key. Try:"
	@echo "  curl -s $(GATEWAY_URL)/predictions/gru_encoder -H \"Authorization: Bearer \$$(cat secrets/api_key)\" -H 'Content-Type: application/json' -d '{\"texts\": [\"i am cold .\"], \"return\": [\"hidden\"]}'"

down:  ## stop and remove the compose stack (either variant, Locust and monitoring included)
	$(COMPOSE) $(CPU_FILES) --profile loadtest --profile monitoring down

# ---- Kubernetes (deploy/kubernetes, docs/SCALING.md): kustomize overlays, validated offline
.PHONY: k8s-validate
k8s-validate: $(VENV)/.installed  ## render every Kubernetes overlay (pinned kustomize) and validate it offline
	$(PY) -m deploy.kubernetes.validate

# serving.env is generated from the serving settings' defaults (gru_encoder/host/settings.py); a test fails when it drifts.
.PHONY: deploy-env
deploy-env: $(VENV)/.installed  ## write deploy/kubernetes/base/serving.env from the serving settings' defaults
	$(PY) -m gru_encoder.host.deploy_env --write

# ---- load tests and benchmark (docs/PERFORMANCE.md)
.PHONY: loadtest bench fuzz
URL ?= http://127.0.0.1:8080
LOADTEST_USERS ?= 8
LOADTEST_TIME ?= 30s

loadtest: $(VENV)/.installed  ## locust, headless, against a running server (URL=..., default 127.0.0.1:8080), 30 s
	PYTHONPATH=. $(VENV)/bin/locust -f loadtests/locustfile.py --headless --only-summary -H $(URL) \
	  -u $(LOADTEST_USERS) -r $(LOADTEST_USERS) -t $(LOADTEST_TIME)

fuzz: $(VENV)/.installed  ## schemathesis against a running server (URL=...) and docs/openapi.json: no 5xx, documented answers
	$(VENV)/bin/schemathesis --config-file tests/integration/schemathesis.toml run docs/openapi.json --url $(URL) --checks all \
	  --exclude-checks positive_data_acceptance,unsupported_method --max-examples 300 --generation-database none

bench: archive java bench-tools  ## limit vs TorchServe vs LitServe vs Ray Serve, locust and wrk, CPU per process with psutil; JSON/Markdown/PNG in loadtests/results/ (~20 min)
	$(PY) -m loadtests.bench --run-dir $(RUN)

# ---- reliability: faults, overload, soak (each starts its own TorchServe from the archive)
.PHONY: faults overload soak swarm-test
SOAK_SECONDS ?= 600
# Only a URL given on the command line or in the environment sends the load there instead of a server started here.
RELIABILITY_URL = $(if $(filter command line environment,$(origin URL)),--url $(URL))

faults: archive java  ## kill workers under load, restart, serve corrupt/mismatched weights; what clients see (~2 min)
	$(PY) -m reliability.faults

overload: archive java  ## 300 users past the job queue: fast JSON 503s, bounded latency, recovery (~1 min; URL=... for a running server)
	$(PY) -m reliability.overload $(RELIABILITY_URL)

# The images of `make up-cpu` (IMAGE, GATEWAY_IMAGE, LOCUST_IMAGE to use others); SWARM_STACK names the stack.
SWARM_STACK ?= gru-encoder-swarm
swarm-test: $(VENV)/.installed docker-ready  ## 3 TorchServe replicas on Docker Swarm: spread, rolling update, kill, scale 1-3-1, gateway CPU (~6 min)
	$(PY) -m reliability.swarm --stack $(SWARM_STACK) --image $(or $(IMAGE),gru-encoder:cpu) \
	  --gateway-image $(or $(GATEWAY_IMAGE),gru-encoder-gateway:latest) --locust-image $(or $(LOCUST_IMAGE),gru-encoder-locust:latest) \
	  --out docs/reliability/swarm-results.json

soak: archive java  ## 70% of saturation for SOAK_SECONDS (600): zero failures, worker RSS growth < 10%; JSON + PNG (~13 min)
	$(PY) -m reliability.soak --duration-s $(SOAK_SECONDS) $(RELIABILITY_URL)

# ---- GPU device check (docs/GPU.md): the served encode path on one device against the CPU; speed, memory
# and the GPU overlay's batch size and workers by batch size. DEVICE_COMMAND is what a GPU machine without
# this venv (Python 3.12 and torch, no pydantic or orjson) runs in the repository root, .whl/ carried along.
.PHONY: device-check device-wheels
DEVICE_CHECK_ARGS ?=
DEVICE_COMMAND := python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 && python3 -m loadtests.device_check --device cuda --out "$$OUT/device-check"

device-wheels:  ## fetch the wheels the device check needs on a GPU machine without them into .whl/ (cp312, ~3 MB)
	scripts/device-wheels.sh .whl

device-check: $(VENV)/.installed  ## the encode path on the GPU (else the CPU) vs the CPU: correctness, speed, memory (DEVICE_CHECK_ARGS=...)
	@echo "On a GPU machine without .venv: make device-wheels here, then there (with .whl/ carried along):"
	@echo '  $(DEVICE_COMMAND)'
	PYTHONPATH=. $(PY) -m loadtests.device_check $(DEVICE_CHECK_ARGS)
