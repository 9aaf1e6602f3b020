"""The handler's own metrics, defined once: declared to TorchServe (the metrics config the launcher
writes) and recorded by the handler through TorchServe's metrics API (context.metrics).

In `metrics_mode=prometheus` TorchServe 0.12's frontend only exposes a backend metric it was told
about at start-up (its `metrics_config` yaml; the alternative, `model_metrics_auto_detect`, registers
whatever name a worker first logs, typos included). So the launcher writes that yaml: TorchServe's own
default metrics plus METRICS below. The handler looks each one up by name (`get_metric`) and updates
it with exactly the dimension values declared here, which become the Prometheus labels.

Every metric carries the version that answered (`version`, after ModelName): several versions of the
model are served at once, each by its own workers, and each version's traffic, errors and times are its
own. TorchServe's frontend takes a metric line's dimension values by position, not by name (it appends
its Hostname), so the handler sends exactly the declared values, in the declared order.

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
from gru_encoder.host.versions import FIRST_VERSION

log = logging.getLogger(__name__)

MODEL = "ModelName"  # TorchServe's own dimension name for the model
VERSION = "version"  # the answering version (TorchServe's modelVersion), on every metric of ours
PINNED_TIME = "gru_encoder_pinned_request_time_seconds"
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
    MetricSpec("gru_encoder_requests_total", "counter", "Count", (MODEL, VERSION, "route", "status", "pinned"),
               "requests answered by the handler, by route (predictions, embeddings, info, models), HTTP status and "
               "whether the caller pinned the version (1) or took the default (0)"),
    MetricSpec("gru_encoder_texts_total", "counter", "Count", (MODEL, VERSION, "route"), "texts encoded, by route"),
    MetricSpec("gru_encoder_tokens_total", "counter", "Count", (MODEL, VERSION, "route"),
               "tokens encoded (<eos> included), by route"),
    MetricSpec("gru_encoder_errors_total", "counter", "Count", (MODEL, VERSION, "route", "type"),
               "error answers, by route and error type (contract.ERRORS)"),
    MetricSpec("gru_encoder_batches_total", "counter", "Count", (MODEL, VERSION), "server batches handled"),
    MetricSpec("gru_encoder_batch_requests_total", "counter", "Count", (MODEL, VERSION),
               "requests in those batches (mean server batch size = its rate / the batches' rate)"),
    MetricSpec("gru_encoder_batch_size", "gauge", "Count", (MODEL, VERSION), "requests in the last server batch"),
    MetricSpec("gru_encoder_stage_seconds_total", "counter", "Seconds", (MODEL, VERSION, "stage"),
               "time spent per stage (tokenize: parsing, validation and tokenizing; forward; serialize)"),
    # What `gru-encoder models retire` reads (host/traffic.py): a version someone still pins is not retired
    # unawares. A time rather than a counter: "when last" survives any scrape interval and needs no rate().
    MetricSpec(PINNED_TIME, "gauge", "Seconds", (MODEL, VERSION),
               "unix time of the last pinned request this version answered (set per batch that had one)"),
)


def is_pinned(header: str | None) -> bool:
    """Whether a request's routes.PINNED_HEADER says its caller named the version: the gateway sends "1" on
    POST /predictions/gru_encoder/<version> and on /v1/embeddings with model gru_encoder@<version>, nothing
    on the unpinned routes (which a canary may answer). Pinned traffic is what callers depend on a version for."""
    return (header or "").strip() == "1"


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

    def __init__(self, cache: Any, model_name: str, interval_s: float = 0.5, version: str = FIRST_VERSION):
        self.model = model_name
        self.version = version  # the handler's own (its manifest's modelVersion): one worker serves one version
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
               stats: BatchStats | None, pinned: Sequence[bool] | None = None) -> None:
        """Adds one server batch to the sums (sent by the background thread); `pinned` per request (is_pinned
        of its header), none pinned when not given."""
        if not self.metrics:
            return
        try:
            pins = list(pinned) if pinned is not None else [False] * len(routes)
            sums: Counter[tuple[str, tuple[str, ...]]] = Counter()
            for route, status, error, pin in zip(routes, statuses, error_types, pins):
                sums["gru_encoder_requests_total", (route, str(status), "1" if pin else "0")] += 1
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
                if any(pins[: len(routes)]):
                    # The batch's time, not the flush's. Workers of one version each set the same label set:
                    # the frontend keeps the last flushed, at most interval_s older than the newest.
                    self._gauges[PINNED_TIME, ()] = time.time()
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
                # TorchServe's own PredictionTime has no version: its declared dimensions are ModelName, Level.
                own = [self.model, *dims] if name == PREDICTION_TIME else [self.model, self.version, *dims]
                self.metrics[name].add_or_update(value, own)
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
