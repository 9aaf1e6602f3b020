"""The handler's own metrics, defined once: declared to TorchServe (the metrics config the launcher
writes) and recorded by the handler through TorchServe's metrics API (context.metrics).

In `metrics_mode=prometheus` TorchServe 0.12's frontend only exposes a backend metric it was told
about at start-up (its `metrics_config` yaml; the alternative, `model_metrics_auto_detect`, registers
whatever name a worker first logs, typos included). So the launcher writes that yaml: TorchServe's own
default metrics plus METRICS below. The handler looks each one up by name (`get_metric`) and updates
it with exactly the dimension values declared here, which become the Prometheus labels.

Times and batch sizes are counters of sums (seconds, requests) beside a counter of batches, so that
Prometheus derives means over any window (rate(sum) / rate(count)) without histogram buckets.
Standard library only: the launcher imports it before any worker exists.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

log = logging.getLogger(__name__)

MODEL = "ModelName"  # TorchServe's own dimension name for the model


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str  # "counter" or "gauge"
    unit: str
    dimensions: tuple[str, ...]
    help: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("gru_encoder_requests_total", "counter", "Count", (MODEL, "route", "status"),
               "requests answered by the handler, by route (predictions, embeddings, info, models) and HTTP status"),
    MetricSpec("gru_encoder_texts_total", "counter", "Count", (MODEL, "route"), "texts encoded, by route"),
    MetricSpec("gru_encoder_tokens_total", "counter", "Count", (MODEL, "route"), "tokens encoded (<eos> included), by route"),
    MetricSpec("gru_encoder_errors_total", "counter", "Count", (MODEL, "route", "type"),
               "error answers, by route and error type (contract.ERRORS)"),
    MetricSpec("gru_encoder_batches_total", "counter", "Count", (MODEL,), "server batches handled"),
    MetricSpec("gru_encoder_batch_requests_total", "counter", "Count", (MODEL,),
               "requests in those batches (mean server batch size = its rate / the batches' rate)"),
    MetricSpec("gru_encoder_batch_size", "gauge", "Count", (MODEL,), "requests in the last server batch"),
    MetricSpec("gru_encoder_stage_seconds_total", "counter", "Seconds", (MODEL, "stage"),
               "time spent per stage (tokenize: parsing, validation and tokenizing; forward; serialize)"),
)
STAGES = ("tokenize", "forward", "serialize")


def metrics_config(ts_default: dict[str, Any]) -> dict[str, Any]:
    """TorchServe's metrics yaml: its default config (ts/configs/metrics.yaml, parsed) with ours added to
    model_metrics. TorchServe's own model metrics (HandlerTime, PredictionTime) stay declared."""
    config = {key: value for key, value in ts_default.items()}
    model_metrics = {kind: list(specs) for kind, specs in (config.get("model_metrics") or {}).items()}
    for spec in METRICS:
        model_metrics.setdefault(spec.type, []).append(
            {"name": spec.name, "unit": spec.unit, "dimensions": list(spec.dimensions)})
    config["model_metrics"] = model_metrics
    return config


@dataclass
class BatchStats:
    """What one server batch cost and carried, per request where it applies (service.EncoderService.handle)."""

    texts: list[int] = field(default_factory=list)  # texts encoded per request (0 when refused)
    tokens: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


class HandlerMetrics:
    """Records a server batch through TorchServe's metrics cache (context.metrics).

    Without the declared metrics (a TorchServe started without the launcher's metrics config) it logs
    one warning and records nothing: metrics never fail a request."""

    def __init__(self, cache: Any, model_name: str):
        self.model = model_name
        self.metrics: dict[str, Any] = {}
        if cache is None or not hasattr(cache, "get_metric"):
            return
        try:
            from ts.metrics.metric_type_enum import MetricTypes  # TorchServe's; only inside a worker
        except ImportError:
            return
        try:
            self.metrics = {s.name: cache.get_metric(s.name, MetricTypes(s.type)) for s in METRICS}
        except Exception as e:  # MetricsCacheKeyError: not declared in TorchServe's metrics config
            log.warning("handler metrics off: %s (start TorchServe with python -m gru_encoder.serve, which declares them)", e)
            self.metrics = {}

    def _add(self, name: str, value: float, *dims: str) -> None:
        metric = self.metrics.get(name)
        if metric is not None:
            metric.add_or_update(value, [self.model, *dims])

    def record(self, routes: Sequence[str], statuses: Sequence[int], error_types: Sequence[str | None],
               stats: BatchStats | None) -> None:
        """One update per label set of the batch, not per request: each update is a log line that
        TorchServe's frontend parses (about 18 us of the worker's CPU apiece, measured in-process)."""
        if not self.metrics:
            return
        try:
            requests, errors = Counter(zip(routes, map(str, statuses))), Counter(zip(routes, error_types))
            texts: Counter[str] = Counter()
            tokens: Counter[str] = Counter()
            for i, route in enumerate(routes):
                if stats is not None and i < len(stats.texts):
                    texts[route] += stats.texts[i]
                    tokens[route] += stats.tokens[i]
            for (route, status), n in requests.items():
                self._add("gru_encoder_requests_total", n, route, status)
            for (route, error), n in errors.items():
                if error is not None:
                    self._add("gru_encoder_errors_total", n, route, error)
            for route, n in texts.items():
                if n:
                    self._add("gru_encoder_texts_total", n, route)
                    self._add("gru_encoder_tokens_total", tokens[route], route)
            self._add("gru_encoder_batches_total", 1)
            self._add("gru_encoder_batch_requests_total", len(routes))
            self._add("gru_encoder_batch_size", len(routes))
            if stats is not None:
                for stage, seconds in stats.seconds.items():
                    self._add("gru_encoder_stage_seconds_total", seconds, stage)
        except Exception:  # a metrics bug must not cost the answers
            log.exception("recording handler metrics failed")
