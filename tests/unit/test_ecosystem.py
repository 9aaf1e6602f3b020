"""The other routes and the handler's metrics in-process (fake TorchServe context, no server): OpenAI
embeddings, /info, /v1/models, the metrics TorchServe would receive, and the client's joining of split
answers."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.client import concat
from gru_encoder.api.contract import ROUTE_HEADER, Encoded
from gru_encoder.host.metrics import METRICS, PINNED_TIME, PREDICTION_TIME, HandlerMetrics, TorchServeMetricsView, metrics_config
from gru_encoder.core.model import pad_batch
from gru_encoder.host.serve import write_metrics_config
from gru_encoder.host.settings import ServingSettings
from handlers.encoder_handler import GruEncoderHandler
from tests.fakes import FakeContext

TEXTS = ["I am cold.", "He is very tall and she is not, I think.", "zorblax!"]


@pytest.fixture(scope="module")
def handler(smoke_run: Path) -> GruEncoderHandler:
    h = GruEncoderHandler()
    h.initialize(FakeContext(smoke_run))
    return h


def call(handler: GruEncoderHandler, rows: list[tuple[str | None, object]], metrics=None) -> list[tuple[int, dict]]:
    """(route header value or None, body) per request, in one server batch."""
    headers = [{ROUTE_HEADER: route} if route is not None else {} for route, _ in rows]
    ctx = FakeContext(Path("."), headers, metrics=metrics)
    bodies = [json.dumps(body).encode() if not isinstance(body, bytes) else body for _, body in rows]
    out = handler.handle([{"body": b} for b in bodies], ctx)
    assert all(ctx.content_type[i] == "application/json" for i in range(len(rows)))
    return [(ctx.status[i], json.loads(b)) for i, b in enumerate(out)]


def hidden_of(run: Path, texts: list[str]) -> np.ndarray:
    loaded = load_encoder(run)
    ids, lengths = pad_batch([loaded.tokenizer.encode(t).ids for t in texts])
    with torch.no_grad():
        return loaded.encoder(ids, lengths)[1].numpy()  # (L*D, B, H)


def test_embeddings_are_the_last_layers_final_state_beside_native_requests(handler, smoke_run: Path) -> None:
    req = {"model": "gru_encoder", "input": TEXTS[:2]}
    (s1, emb), (s2, native), (s3, b64) = call(handler, [("embeddings", req), (None, {"texts": [TEXTS[2]]}),
                                                        ("Embeddings", {**req, "encoding_format": "base64"})])
    assert (s1, s2, s3) == (200, 200, 200)
    # One packed forward pass for all four texts, exactly as the encoder run here on the same batch.
    hidden = hidden_of(smoke_run, [*TEXTS[:2], TEXTS[2], *TEXTS[:2]])
    assert np.array_equal(np.asarray([d["embedding"] for d in emb["data"]], np.float32), hidden[-1, :2])
    assert np.array_equal(np.asarray(native["hidden"], np.float32), hidden[:, 2:3])
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]]
    assert np.array_equal(np.asarray(decoded), hidden[-1, 3:])
    assert emb["object"] == "list" and [d["index"] for d in emb["data"]] == [0, 1] and emb["model"] == "gru_encoder"
    tokens = sum(len(load_encoder(smoke_run).tokenizer.encode(t).ids) for t in TEXTS[:2])  # <eos> included
    assert tokens == 5 + 13 and emb["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_openai_errors_have_openai_shape_and_native_statuses(handler) -> None:
    rows = [("embeddings", {"model": "gru_encoder", "input": ["ok", ""]}),
            ("embeddings", {"model": "gru_encoder", "input": ["x"] * 65}),
            ("embeddings", {"model": "gru_encoder", "input": "x", "encoding_format": "int8"}),
            ("embeddings", b"[1]"), ("bogus", {"texts": ["x"]}), (None, {"texts": []})]
    got = call(handler, rows)
    assert [s for s, _ in got] == [422, 413, 422, 422, 422, 422]
    for status, body in got[:4]:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
    assert got[0][1]["error"] == {"message": "input[1] has no tokens (empty, whitespace or control characters only)",
                                  "type": "invalid_request_error", "param": "input[1]", "code": "validation_error"}
    assert got[1][1]["error"]["code"] == "too_many_texts" and got[1][1]["error"]["param"] == "input"
    assert got[2][1]["error"]["param"] == "encoding_format"
    assert got[4][1]["type"] == "validation_error" and got[4][1]["field"] == ROUTE_HEADER  # unknown route: native shape
    assert got[5][1]["type"] == "validation_error" and "error" not in got[5][1]


def test_info_and_models_come_from_the_run(handler, smoke_run: Path) -> None:
    config = json.loads((smoke_run / "config.json").read_text())
    [(s1, info), (s2, models)] = call(handler, [("info", b""), ("models", b"")])
    assert s1 == s2 == 200
    enc = config["encoder"]
    assert info["weights_sha256"] == config["files"]["weights"]["sha256"] and info["vocab_size"] == enc["vocab_size"]
    assert (info["hidden_size"], info["num_layers"], info["bidirectional"]) == (enc["hidden_size"], enc["num_layers"], enc["bidirectional"])
    assert info["embedding_size"] == enc["hidden_size"] * (2 if enc["bidirectional"] else 1)
    assert info["max_tokens"] == config["tokenizer"]["max_length"]
    assert info["limits"]["max_texts"] == ServingSettings.from_env().max_texts
    assert models["data"][0]["id"] == config["model_name"] and models["data"][0]["object"] == "model"


def test_metrics_reach_torchserves_cache_as_declared(handler, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    write_metrics_config(tmp_path / "metrics.yaml")
    declared = yaml.safe_load((tmp_path / "metrics.yaml").read_text())
    assert "Requests2XX" in json.dumps(declared["ts_metrics"])  # TorchServe's own stay declared
    cache = MetricsCacheYamlImpl(str(tmp_path / "metrics.yaml"))
    cache.initialize_cache()
    handler.metrics = HandlerMetrics(cache, "gru_encoder")  # as initialize() makes it from the worker's cache
    with caplog.at_level(logging.INFO):
        call(handler, [("embeddings", {"model": "gru_encoder", "input": ["i am cold .", "hi"]}), (None, {"texts": []}),
                       ("info", b"")], metrics=cache)
        assert not [r for r in caplog.records if r.getMessage().startswith("[METRICS]gru_encoder_")]  # summed, not sent yet
        handler.metrics.flush()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]gru_encoder_")]

    def value(name: str, **dims: str) -> float:
        found = [float(m.group(1)) for line in lines if (m := re.match(rf"\[METRICS\]{name}\.\w+:([0-9.e-]+)\|#([^|]*)\|", line))
                 and all(f"{k}:{v}" in m.group(2).split(",") for k, v in dims.items())]
        return sum(found)

    assert value("gru_encoder_requests_total", route="embeddings", status="200") == 1
    assert value("gru_encoder_requests_total", route="predictions", status="422") == 1
    assert value("gru_encoder_errors_total", route="predictions", type="validation_error") == 1
    assert value("gru_encoder_requests_total", route="info", status="200") == 1
    assert value("gru_encoder_texts_total", route="embeddings") == 2
    assert value("gru_encoder_tokens_total", route="embeddings") == 5 + 2
    assert value("gru_encoder_batch_size") == 3 and value("gru_encoder_batches_total") == 1
    assert {m.group(1) for line in lines if (m := re.search(r"stage:(\w+)", line))} == {"tokenize", "forward", "serialize"}
    # Every metric of ours but the pinned-request time, which only a pinned request sets (tests/unit/test_metrics.py).
    assert {re.match(r"\[METRICS\](\w+)\.", line).group(1) for line in lines} == {m.name for m in METRICS} - {PINNED_TIME}
    handler.metrics = HandlerMetrics(None, "gru_encoder")


def test_torchserves_prediction_time_is_sent_with_the_sums_not_per_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    write_metrics_config(tmp_path / "metrics.yaml")
    cache = MetricsCacheYamlImpl(str(tmp_path / "metrics.yaml"))
    cache.initialize_cache()
    cache.model_name = "gru_encoder"
    metrics = HandlerMetrics(cache, "gru_encoder", interval_s=3600)
    view = TorchServeMetricsView(cache, metrics)
    with caplog.at_level(logging.INFO):
        for ms in (1.5, 2.25, 0.75):  # what ts/service.py does after each batch
            view.request_ids = {0: "req-a"}
            view.add_time(PREDICTION_TIME, ms)
        assert cache.request_ids == {0: "req-a"}  # attributes reach the real cache
        assert not [r for r in caplog.records if "PredictionTime" in r.getMessage()]
        metrics.flush()
        view.add_time("OtherTime", 4.0)  # any other timing passes through, logged at once
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]")]
    [sent] = [line for line in lines if line.startswith(f"[METRICS]{PREDICTION_TIME}")]
    assert PREDICTION_TIME in metrics.metrics
    assert sent.startswith(f"[METRICS]{PREDICTION_TIME}.Milliseconds:0.75|#ModelName:gru_encoder,Level:Model|"), sent  # the latest batch's
    assert any(line.startswith("[METRICS]OtherTime.Milliseconds:4.0|") for line in lines), lines


def test_metrics_config_adds_ours_to_torchserves(tmp_path: Path) -> None:
    config = metrics_config({"ts_metrics": {"counter": [{"name": "Requests2XX"}]}, "model_metrics": {"gauge": [{"name": "HandlerTime"}]}})
    assert config["ts_metrics"] == {"counter": [{"name": "Requests2XX"}]}
    names = {m["name"]: kind for kind, specs in config["model_metrics"].items() for m in specs}
    assert names["HandlerTime"] == "gauge" and all(names[m.name] == m.type for m in METRICS)
    props = ServingSettings(log_dir=str(tmp_path)).torchserve_properties()
    assert props["metrics_config"] == str(tmp_path.resolve() / "metrics.yaml")


def test_client_joins_split_answers_as_one() -> None:
    rng = np.random.default_rng(0)

    def part(lengths: list[int]) -> Encoded:
        b, t = len(lengths), max(lengths)
        return Encoded(model={"name": "m"}, tokens=[["a"] * n for n in lengths],
                       ids=rng.integers(1, 9, (b, t)), lengths=np.asarray(lengths), truncated=[False] * b,
                       output=rng.standard_normal((b, t, 4)).astype(np.float32), hidden=rng.standard_normal((1, b, 4)).astype(np.float32))

    a, b = part([3, 5]), part([2])
    joined = concat([a, b])
    assert joined.ids.shape == (3, 5) and joined.output.shape == (3, 5, 4) and joined.hidden.shape == (1, 3, 4)
    assert np.array_equal(joined.output[2, :2], b.output[0]) and not joined.output[2, 2:].any()
    assert np.array_equal(joined.hidden[:, :2], a.hidden) and joined.lengths.tolist() == [3, 5, 2]


def test_metrics_overhead_tool_runs(smoke_run: Path) -> None:
    import subprocess
    import sys

    from tests import ROOT

    result = subprocess.run([sys.executable, "-m", "loadtests.metrics_overhead", "--run-dir", str(smoke_run), "--batch", "2",
                             "--calls", "5", "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(r"batch +2 round 1: +[0-9.]+ us without metrics, +[0-9.]+ us with: metrics +-?[0-9.]+ us \( *-?[0-9.]+%\)\n",
                        result.stdout), result.stdout


def test_without_prediction_time_declared_the_handlers_metrics_stay_on(tmp_path: Path) -> None:
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    write_metrics_config(tmp_path / "metrics.yaml")
    config = yaml.safe_load((tmp_path / "metrics.yaml").read_text())
    config["model_metrics"] = {kind: [m for m in specs if m["name"] != PREDICTION_TIME] for kind, specs in config["model_metrics"].items()}
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump(config))
    cache = MetricsCacheYamlImpl(str(tmp_path / "metrics.yaml"))
    cache.initialize_cache()
    metrics = HandlerMetrics(cache, "gru_encoder")
    assert set(metrics.metrics) == {m.name for m in METRICS}  # ours on; PredictionTime left to TorchServe
