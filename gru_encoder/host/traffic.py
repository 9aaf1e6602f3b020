"""Pinned traffic per served version, read from TorchServe's Prometheus metrics (its metrics port, GET /metrics).

What it is for: `gru-encoder models retire V` refuses to retire a version that callers still pin by name
(POST /predictions/gru_encoder/V, or /v1/embeddings with model gru_encoder@V) unless --force, since those
callers would get 404s. Before it unregisters anything, retire does:

    from gru_encoder.host import traffic

    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"  # logs/serving-settings.json's metrics_port (8082)
    text = traffic.fetch(url)                  # TrafficError when it does not answer: refuse, naming --force
    last = traffic.last_pinned(text, version)  # None: no pinned request answered since TorchServe started
    if not force and last is not None and time.time() - last < traffic.QUIET_S:
        raise CommandError(f"version {version} answered a pinned request {time.time() - last:.0f} s ago: ...")

The figure is the gauge gru_encoder_pinned_request_time_seconds{ModelName, version} (host/metrics.py),
which each worker sets to the time of its last batch that held a request with the gateway's pinned
header. What it cannot tell:
- Requests that did not pass the gateway carry no header and are not counted as pinned (`models add`'s
  own checks go to TorchServe directly).
- TorchServe's frontend keeps its metrics in memory: after a restart None means "none since the restart".
  `declared` tells a server that does not export the gauge at all (an older handler) from one that saw
  no pinned request.
- One TorchServe answers for itself. Behind several replicas ask each, or Prometheus:
  `max by (version) (gru_encoder_pinned_request_time_seconds)`.
- The time is the answering worker's clock: the same machine's as the caller's on `make serve`.
Standard library and requests only.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

import requests

from gru_encoder.host.metrics import MODEL, PINNED_TIME, VERSION

REQUESTS = "gru_encoder_requests_total"
from gru_encoder.host.versions import MODEL_NAME

QUIET_S = 300.0  # a version pinned less than this long ago is still in use: retire refuses it without --force

# One sample line of the Prometheus text format: name, optional {labels}, value, optional timestamp.
# TorchServe's Java client writes a trailing comma inside the braces and doubles as 1.7965925E9.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class TrafficError(RuntimeError):
    """TorchServe's metrics could not be read; the message says where it looked and what to check."""


def samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric `name` in Prometheus text; other metrics and comments skipped."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != name:
            continue
        labels = {k: re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], v) for k, v in _LABEL.findall(m.group(2) or "")}
        try:
            yield labels, float(m.group(3))
        except ValueError:
            continue


def declared(text: str, name: str = PINNED_TIME) -> bool:
    """Whether the server exports the metric at all (its # TYPE line), samples or none yet."""
    return re.search(rf"^# TYPE {re.escape(name)} ", text, re.MULTILINE) is not None


def last_pinned(text: str, version: str, model: str = MODEL_NAME) -> float | None:
    """Unix time of the newest pinned request `version` answered, across label sets (workers' hosts,
    replicas in federated text); None when there is none."""
    times = [value for labels, value in samples(text, PINNED_TIME)
             if labels.get(VERSION) == version and labels.get(MODEL, model) == model and math.isfinite(value)]
    return max(times, default=None)


def requests_served(text: str, version: str, model: str = MODEL_NAME) -> int:
    """Requests `version` answered since its TorchServe started (gru_encoder_requests_total, every route and status)."""
    return int(sum(value for labels, value in samples(text, REQUESTS)
                   if labels.get(VERSION) == version and labels.get(MODEL, model) == model and math.isfinite(value)))


def fetch(metrics_url: str, timeout: float = 5.0) -> str:
    """TorchServe's Prometheus text from its metrics endpoint, or TrafficError saying why not."""
    hint = "is the server running (make serve), and is this its metrics port (metrics_port in logs/serving-settings.json)?"
    try:
        r = requests.get(metrics_url, timeout=timeout)
    except requests.RequestException as e:
        raise TrafficError(f"TorchServe's metrics at {metrics_url} did not answer ({type(e).__name__}, "
                           f"timeout {timeout:g} s): {hint}") from None
    if r.status_code != 200:
        raise TrafficError(f"TorchServe's metrics at {metrics_url} answered HTTP {r.status_code} ({r.text[:200].strip()!r}): "
                           f"{hint} TorchServe serves them with metrics_mode=prometheus (config.properties)")
    return r.text
