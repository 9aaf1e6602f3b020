# gru-encoder: TorchServe serving the encoder archive. Build and run it with docker compose
# (docs/DEPLOY.md); plain docker works too:
#   docker build -t gru-encoder:cuda .                                         # CUDA torch (GPU hosts)
#   docker build -t gru-encoder:cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   docker run --rm -p 127.0.0.1:8080:8080 gru-encoder:cpu
# Only the classic Dockerfile syntax is used (no RUN --mount, no COPY --chmod), so Debian's Docker
# 20.10 legacy builder and docker-compose 1.29 build it as well as BuildKit does.

ARG BASE_IMAGE=debian:bookworm-slim

# ---- build: a venv with the pinned dependencies (bookworm's python3 is 3.11, as pyproject requires)
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Extra certificate authorities for pip, e.g. a proxy's that re-signs TLS (put *.crt files in
# docker/ca-certificates/). Only this build stage trusts them; the served image does not.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PATH=/opt/venv/bin:$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv && pip install --no-cache-dir --quiet pip==24.3.1

# Which torch: a wheel file put in docker/wheels/ (TORCH_WHEEL=<its file name>), else the pinned
# version from TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu), else the pinned version
# from PyPI, which on Linux x86_64 is the CUDA build (several GB, with its CUDA libraries; the host
# only needs the NVIDIA driver and container toolkit).
ARG TORCH_WHEEL=
ARG TORCH_INDEX_URL=
COPY pyproject.toml /src/pyproject.toml
COPY docker/extra-pins.py /src/docker/extra-pins.py
COPY docker/wheels/ /tmp/wheels/
# The torch pin is read from pyproject.toml, so every pin lives in one place.
RUN set -eu; \
    torch_pin="$(python /src/docker/extra-pins.py /src/pyproject.toml core | tr ' ' '\n' | grep '^torch==')"; \
    if [ -n "$TORCH_WHEEL" ]; then \
      pip install --no-cache-dir --quiet "/tmp/wheels/$TORCH_WHEEL"; \
    elif [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --no-cache-dir --quiet --index-url "$TORCH_INDEX_URL" "$torch_pin"; \
    else \
      pip install --no-cache-dir --quiet "$torch_pin"; \
    fi; \
    python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
# The `serve` extra's pins (with `core`'s: torch, safetensors, numpy, pydantic, orjson; then TorchServe
# and pyyaml) and nothing else: no training stack, no archiver. Read from pyproject.toml itself, so
# the pins live in one place; torch's build from above satisfies torch==<pin>. The venv is then
# final: it stays cached while only the package's code changes.
RUN pip install --no-cache-dir --quiet $(python /src/docker/extra-pins.py /src/pyproject.toml serve)
# The project's own wheel, installed in the runtime stage (a small layer of its own). The handler
# runs the gru_encoder copy packed in the .mar; the install makes `pip check` hold the venv to the
# project's declared requirements.
COPY gru_encoder /src/gru_encoder
RUN pip wheel --no-cache-dir --quiet --no-deps --wheel-dir /dist /src

# ---- agent: the batch-fill agent (java/BatchFillAgent.java; docs/PERFORMANCE.md), built with a JDK 17.
# The served image gets the jar alone.
FROM ${BASE_IMAGE} AS agent
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/build-agent.sh /src/scripts/build-agent.sh
COPY java/BatchFillAgent.java /src/java/BatchFillAgent.java
RUN /src/scripts/build-agent.sh /dist/batch-fill-agent.jar

# ---- runtime: JRE 17 for TorchServe's frontend, python3 for the venv, tini as PID 1
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=gru-encoder org.opencontainers.image.description="Embedding+GRU text encoder served by TorchServe"
# The JRE's postinst wants man directories that slim images may leave out.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --home-dir /home/model-server --uid 1000 --user-group --shell /usr/sbin/nologin model-server
COPY --from=build /opt/venv /opt/venv
COPY --from=build /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --quiet --no-index --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist && /opt/venv/bin/pip check
COPY docker/healthcheck.py /usr/local/bin/gru-encoder-healthcheck
COPY config.properties /home/model-server/config.properties
COPY log4j2.xml /home/model-server/log4j2.xml
COPY --from=agent /dist/batch-fill-agent.jar /home/model-server/batch-fill-agent.jar
RUN chmod 0755 /usr/local/bin/gru-encoder-healthcheck
# The serving settings' container defaults (gru_encoder/host/settings.py): inference and metrics on the
# container's network (management and gRPC stay on its loopback), the image's model store. Every
# other setting (workers, batching, threads, limits) keeps its default unless GRU_ENCODER_<NAME> is
# set at `docker run -e` / compose time: no new archive or image needed.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRU_ENCODER_BIND=0.0.0.0 \
    GRU_ENCODER_MODEL_STORE=/home/model-server/model-store \
    GRU_ENCODER_TS_CONFIG=/home/model-server/config.properties \
    GRU_ENCODER_BATCH_FILL_AGENT=/home/model-server/batch-fill-agent.jar \
    GRU_ENCODER_LOG_DIR=/home/model-server/logs \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# The archive, last so a new model rebuilds one small layer. docker compose also mounts a model store
# over this folder (MODEL_STORE), so a new .mar needs a restart, not a rebuild.
ARG MAR=model_store/gru_encoder.mar
COPY ${MAR} /home/model-server/model-store/gru_encoder.mar
USER model-server
WORKDIR /home/model-server
EXPOSE 8080
# A real prediction, not /ping: /ping stays "Healthy" while the worker crash-loops.
HEALTHCHECK --interval=10s --timeout=10s --start-period=120s --retries=3 CMD ["python3", "/usr/local/bin/gru-encoder-healthcheck"]
# tini is PID 1: it forwards SIGTERM to the launcher (python -m gru_encoder.host.serve, the same as make
# serve), which stops TorchServe cleanly; when TorchServe dies on its own the launcher exits 1 and so
# does the container (the restart policy decides what happens next).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python3", "-m", "gru_encoder.host.serve"]
