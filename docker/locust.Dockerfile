# Locust for the `loadtest` compose profile: master and workers run loadtests/locustfile.py, which
# compose mounts read-only at /mnt/project/loadtests. The image holds only what the locustfile
# imports (locust, numpy, orjson), at the versions pinned in pyproject.toml.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Extra certificate authorities for pip (see the Dockerfile); this stage only.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /tmp/pyproject.toml
RUN set -eu; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --quiet pip==24.3.1; \
    pins="$(python3 -c 'import tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; \
reqs = p["dependencies"] + [r for extra in p["optional-dependencies"].values() for r in extra]; \
print(" ".join(r.split("#")[0].strip() for r in reqs if r.split("==")[0] in ("locust", "numpy", "orjson")))')"; \
    echo "installing $pins"; \
    /opt/venv/bin/pip install --no-cache-dir --quiet $pins

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=gru-encoder-locust
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin locust
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/mnt/project PYTHONUNBUFFERED=1
USER locust
WORKDIR /home/locust
EXPOSE 8089 5557
ENTRYPOINT ["locust", "-f", "/mnt/project/loadtests/locustfile.py"]
