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
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from gru_encoder.api.stats import BatchStats

log = logging.getLogger(__name__)

MODEL = "ModelName"  # TorchServe's own dimension name for the model
# TorchServe's own model metric: its service (ts/service.py) times every batch with it, a gauge with
# dimensions ModelName and Level (ts/configs/metrics.yaml). It goes through HandlerMetrics (TorchServeMetricsView).
PREDICTION_TIME = "PredictionTime"


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


class HandlerMetrics:
    """Records server batches through TorchServe's metrics cache (context.metrics).

    Every update TorchServe's metrics API makes is a log line for its frontend to parse (about 18 us of
    the worker's CPU apiece, and the frontend's own CPU beside): ten a batch were 30-44% of a lone
    request's in-process handler work. So a batch only adds its counts to sums kept here, and a
    background thread sends the sums every `interval_s` (one line per label set that changed); what
    Prometheus shows lags the requests by at most that interval. Counters stay exact: nothing is
    dropped, only grouped (the last interval's sums are lost only if the worker dies).

    Without the declared metrics (a TorchServe started without the launcher's metrics config) it logs
    one warning and records nothing: metrics never fail a request."""

    def __init__(self, cache: Any, model_name: str, interval_s: float = 0.5):
        self.model = model_name
        self.interval_s = interval_s
        self.metrics: dict[str, Any] = {}
        self._sums: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self._gauges: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        if cache is None or not hasattr(cache, "get_metric"):
            return
        try:
            from ts.metrics.metric_type_enum import MetricTypes  # TorchServe's; only inside a worker
        except ImportError:
            return
        try:
            self.metrics = {s.name: cache.get_metric(s.name, MetricTypes(s.type)) for s in METRICS}
        except Exception as e:  # MetricsCacheKeyError: not declared in TorchServe's metrics config
            log.warning("handler metrics off: %s (start TorchServe with python -m gru_encoder.host.serve, which declares them)", e)
            self.metrics = {}
            return
        try:  # TorchServe's own gauge, sent with the sums when declared (TorchServeMetricsView)
            self.metrics[PREDICTION_TIME] = cache.get_metric(PREDICTION_TIME, MetricTypes.GAUGE)
        except Exception:
            pass  # not declared: ts/service.py keeps logging it per batch, as TorchServe does

    def record(self, routes: Sequence[str], statuses: Sequence[int], error_types: Sequence[str | None],
               stats: BatchStats | None) -> None:
        """Adds one server batch to the sums (sent by the background thread)."""
        if not self.metrics:
            return
        try:
            sums: Counter[tuple[str, tuple[str, ...]]] = Counter()
            for route, status, error in zip(routes, statuses, error_types):
                sums["gru_encoder_requests_total", (route, str(status))] += 1
                if error is not None:
                    sums["gru_encoder_errors_total", (route, error)] += 1
            if stats is not None:
                for i, route in enumerate(routes[: len(stats.texts)]):
                    if stats.texts[i]:
                        sums["gru_encoder_texts_total", (route,)] += stats.texts[i]
                        sums["gru_encoder_tokens_total", (route,)] += stats.tokens[i]
                for stage, seconds in stats.seconds.items():
                    sums["gru_encoder_stage_seconds_total", (stage,)] += seconds
            sums["gru_encoder_batches_total", ()] += 1
            sums["gru_encoder_batch_requests_total", ()] += len(routes)
            with self._lock:
                self._sums.update(sums)
                self._gauges["gru_encoder_batch_size", ()] = len(routes)
            self._start_flusher()
        except Exception:  # a metrics bug must not cost the answers
            log.exception("recording handler metrics failed")

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, name="gru-encoder-metrics", daemon=True)
            self._flusher.start()

    def set_gauge(self, name: str, value: float, dims: tuple[str, ...] = ()) -> None:
        """A gauge's latest value, sent at the next flush (values set in between are not sent)."""
        if name in self.metrics:
            with self._lock:
                self._gauges[name, dims] = value
            self._start_flusher()

    def flush(self) -> None:
        """Sends what was summed since the last flush: one metric update per label set."""
        with self._lock:
            sums, gauges = self._sums, self._gauges
            self._sums, self._gauges = Counter(), {}
        try:
            for (name, dims), value in [*sums.items(), *gauges.items()]:
                self.metrics[name].add_or_update(value, [self.model, *dims])
        except Exception:
            log.exception("sending handler metrics failed")

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()


class TorchServeMetricsView:
    """context.metrics as TorchServe's service sees it once the handler has loaded: the worker's metrics
    cache, except that the PredictionTime it records after every batch (ts/service.py) becomes a gauge of
    HandlerMetrics, sent with the handler's sums (the latest batch's value, every interval) instead of
    a log line a batch for the frontend to parse. Prometheus shows the same gauge; it is sampled every
    interval rather than rewritten per batch, finer than any scrape. Everything else is passed through."""

    def __init__(self, cache: Any, metrics: HandlerMetrics):
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_metrics", metrics)

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms", dimensions: list | None = None,
                 *args: Any, **kwargs: Any) -> None:
        if name == PREDICTION_TIME and not dimensions and PREDICTION_TIME in self._metrics.metrics:
            self._metrics.set_gauge(PREDICTION_TIME, value, ("Model",))  # TorchServe's Level dimension
            return
        self._cache.add_time(name, value, idx, unit, [] if dimensions is None else dimensions, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)

    def __setattr__(self, name: str, value: Any) -> None:  # ts/service.py sets request_ids on it every batch
        setattr(self._cache, name, value)
