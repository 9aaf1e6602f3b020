"""The handler's metrics per served version, through TorchServe's real metrics cache (no server): every
label set carries the answering version, requests say whether the caller pinned it, the pinned-request
time is set only by a batch that had one, and every line is one TorchServe 0.12's frontend parses into
the declared labels."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
import yaml

from gru_encoder.api.routes import PINNED_HEADER
from gru_encoder.host.metrics import METRICS, MODEL, PINNED_TIME, VERSION, HandlerMetrics, is_pinned
from gru_encoder.host.serve import write_metrics_config
from handlers.encoder_handler import GruEncoderHandler
from tests.fakes import FakeContext

# TorchServe 0.12's frontend (org.pytorch.serve.metrics.Metric.parse, read from model-server.jar): a
# worker's metric line it cannot match is dropped with an error, and its dimension values (group 4) are
# taken by position as the declared labels' values, the host appended.
FRONTEND_LINE = re.compile(r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?\|#hostname:([^,]+),([^,]+)(,(.*))?")


@pytest.fixture()
def cache(tmp_path: Path):
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    write_metrics_config(tmp_path / "metrics.yaml")
    c = MetricsCacheYamlImpl(str(tmp_path / "metrics.yaml"))
    c.initialize_cache()
    return c


def served_as(run: Path, version: str, cache) -> GruEncoderHandler:
    """The handler as a worker of `version` initializes it: its manifest's modelVersion, the worker's metrics cache."""
    ctx = FakeContext(run, metrics=cache)
    ctx.manifest["model"]["modelVersion"] = version
    h = GruEncoderHandler()
    h.initialize(ctx)
    return h


def sent_lines(handler: GruEncoderHandler, rows: list[dict[str, str]], caplog: pytest.LogCaptureFixture) -> list[str]:
    """One server batch of native one-text requests with these headers, then the flush: the metric lines sent."""
    ctx = FakeContext(Path("."), rows)
    handler.handle([{"body": json.dumps({"texts": ["i am cold ."]}).encode()} for _ in rows], ctx)
    assert set(ctx.status.values()) == {200}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        handler.metrics.flush()
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]")]


def labelled(lines: list[str], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{labels as the frontend names them: value} for one metric, from the lines as the frontend parses them."""
    spec = next(m for m in METRICS if m.name == name)
    out = {}
    for line in lines:
        m = FRONTEND_LINE.fullmatch(line.removeprefix("[METRICS]"))
        assert m is not None, f"TorchServe's frontend would drop {line!r}"
        if m.group(1) == name:
            values = [pair.split(":", 1)[1] for pair in m.group(4).split(",")]
            assert len(values) == len(spec.dimensions), line  # the frontend's labels: exactly the declared ones
            out[tuple(zip(spec.dimensions, values))] = float(m.group(3))
    return out


def test_every_metric_is_declared_by_model_then_version(tmp_path: Path) -> None:
    write_metrics_config(tmp_path / "metrics.yaml")
    declared = {m["name"]: m["dimensions"] for specs in yaml.safe_load((tmp_path / "metrics.yaml").read_text())["model_metrics"].values()
                for m in specs}
    for spec in METRICS:
        assert declared[spec.name] == list(spec.dimensions) and spec.dimensions[:2] == (MODEL, VERSION), spec.name
    assert declared["gru_encoder_requests_total"] == [MODEL, VERSION, "route", "status", "pinned"]
    assert declared[PINNED_TIME] == [MODEL, VERSION] and next(m for m in METRICS if m.name == PINNED_TIME).type == "gauge"
    assert declared["PredictionTime"] == ["ModelName", "Level"]  # TorchServe's own, unchanged


def test_a_versions_worker_labels_its_requests_and_pinned_ones(smoke_run: Path, cache, caplog: pytest.LogCaptureFixture) -> None:
    handler = served_as(smoke_run, "2.0", cache)
    assert handler.metrics.version == "2.0"
    before = time.time()
    # Header names in any case, as TorchServe hands them over; "0" and empty are not pinned.
    lines = sent_lines(handler, [{PINNED_HEADER: "1"}, {PINNED_HEADER.lower(): "1"}, {}, {PINNED_HEADER: ""},
                                 {PINNED_HEADER: "0"}], caplog)
    after = time.time()
    requests = labelled(lines, "gru_encoder_requests_total")
    common = (("ModelName", "gru_encoder"), ("version", "2.0"), ("route", "predictions"), ("status", "200"))
    assert requests == {(*common, ("pinned", "1")): 2.0, (*common, ("pinned", "0")): 3.0}
    [(labels, at)] = labelled(lines, PINNED_TIME).items()
    assert labels == (("ModelName", "gru_encoder"), ("version", "2.0")) and before <= at <= after
    for spec in METRICS:  # every other metric sent carries the version too
        assert all(dict(k)["version"] == "2.0" for k in labelled(lines, spec.name)), spec.name
    assert not [r for r in caplog.records if "Failed to update" in r.getMessage()]  # TorchServe's cache took every line


def test_a_batch_without_pinned_requests_leaves_the_pinned_time_alone(smoke_run: Path, cache, caplog: pytest.LogCaptureFixture) -> None:
    handler = served_as(smoke_run, "1.0", cache)
    lines = sent_lines(handler, [{}, {PINNED_HEADER: "0"}], caplog)
    assert labelled(lines, PINNED_TIME) == {}
    assert set(labelled(lines, "gru_encoder_requests_total").values()) == {2.0}
    assert [dict(k)["pinned"] for k in labelled(lines, "gru_encoder_requests_total")] == ["0"]


def test_recording_without_pinned_flags_counts_nothing_as_pinned(cache, caplog: pytest.LogCaptureFixture) -> None:
    metrics = HandlerMetrics(cache, "gru_encoder", interval_s=3600, version="3.1")
    metrics.record(["embeddings", "info"], [200, 200], [None, None], None)  # what loadtests/metrics_overhead.py calls
    with caplog.at_level(logging.INFO):
        metrics.flush()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]")]
    assert {dict(k)["pinned"] for k in labelled(lines, "gru_encoder_requests_total")} == {"0"}
    assert {dict(k)["version"] for k in labelled(lines, "gru_encoder_batches_total")} == {"3.1"}
    assert labelled(lines, PINNED_TIME) == {}


@pytest.mark.parametrize("value, pinned", [("1", True), (" 1 ", True), (None, False), ("", False), ("0", False), ("yes", False)])
def test_only_the_gateways_1_pins(value: str | None, pinned: bool) -> None:
    assert is_pinned(value) is pinned
