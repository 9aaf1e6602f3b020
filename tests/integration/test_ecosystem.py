"""The other dialects against a real TorchServe (no gateway): OpenAI embeddings with the official
`openai` package, /info and /v1/models through the route header, the handler's metrics on TorchServe's
Prometheus endpoint, and the request id in the handler's error log."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import numpy as np
import openai
import pytest
import requests

from gru_encoder.api.openai_local import torchserve_http_client
from gru_encoder.api.contract import ROUTE_HEADER
from gru_encoder.host.settings import ServingSettings

pytestmark = pytest.mark.slow

TEXTS = ["i am cold .", "He is very tall and she is not, I think.", "zorblax quux!", "我爱你"]


def native_hidden(url: str, texts: list[str]) -> np.ndarray:
    r = requests.post(f"{url}/predictions/gru_encoder", json={"texts": texts, "return": ["hidden"]}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    return np.asarray(body["hidden"], np.float32).reshape(body["shapes"]["hidden"])


def route(url: str, name: str, body: dict | None = None, headers: dict | None = None) -> requests.Response:
    return requests.post(f"{url}/predictions/gru_encoder", json=body if body is not None else {},
                         headers={ROUTE_HEADER: name, **(headers or {})}, timeout=30)


def test_openai_package_gets_the_native_hidden_state(server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused-without-the-gateway",
                           http_client=torchserve_http_client(), max_retries=0)
    ref = native_hidden(server.url, TEXTS)[-1]  # (B, H): the last layer's final state
    as_floats = client.embeddings.create(model="gru_encoder", input=TEXTS, encoding_format="float")
    default = client.embeddings.create(model="gru_encoder", input=TEXTS)  # the package asks for base64 itself
    for result in (as_floats, default):
        got = np.asarray([d.embedding for d in sorted(result.data, key=lambda d: d.index)], np.float32)
        assert got.shape == ref.shape
        # Same texts in one forward pass on both routes: within float32 rounding of the batch.
        assert np.abs(got - ref).max() <= 1e-6
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens > len(TEXTS)
    one = client.embeddings.create(model="gru_encoder", input="i am cold .")
    assert len(one.data) == 1 and np.abs(np.asarray(one.data[0].embedding, np.float32) - ref[0]).max() <= 1e-6


def test_base64_is_little_endian_float32_of_the_same_floats(server) -> None:
    body = {"model": "gru_encoder", "input": TEXTS}
    floats = route(server.url, "embeddings", {**body, "encoding_format": "float"}).json()
    b64 = route(server.url, "embeddings", {**body, "encoding_format": "base64"}).json()
    for f, b in zip(floats["data"], b64["data"]):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, np.asarray(f["embedding"], np.float32))
    normalized = route(server.url, "embeddings", {**body, "normalize": True}).json()
    norms = np.linalg.norm(np.asarray([d["embedding"] for d in normalized["data"]], np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-6)


def test_openai_errors_keep_their_status_in_openai_shape(server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", http_client=torchserve_http_client(), max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        client.embeddings.create(model="gru_encoder", input=["ok", "   "])
    assert exc.value.status_code == 422
    assert exc.value.body == {"message": "input[1] has no tokens (empty, whitespace or control characters only)",
                              "type": "invalid_request_error", "param": "input[1]", "code": "validation_error"}
    r = route(server.url, "embeddings", {"model": "gru_encoder", "input": ["x"] * 65})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_texts" and r.json()["error"]["param"] == "input"
    for bad, param in [({"model": "other", "input": "x"}, "model"), ({"model": "gru_encoder", "input": [1, 2]}, "input[0]"),
                       ({"model": "gru_encoder", "input": "x", "dimensions": 3}, "dimensions"), ({"input": "x"}, "model")]:
        r = route(server.url, "embeddings", bad)
        assert r.status_code == 422 and set(r.json()) == {"error"}, r.text
        assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error", r.text
    r = requests.post(f"{server.url}/predictions/gru_encoder", data=b"{nope", headers={ROUTE_HEADER: "embeddings"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_info_equals_the_runs_config(server, smoke_run: Path) -> None:
    config = json.loads((smoke_run / "config.json").read_text())
    info = route(server.url, "info").json()
    enc = config["encoder"]
    assert info["name"] == config["model_name"] and info["version"] == "1.0"
    assert info["weights_sha256"] == config["files"]["weights"]["sha256"]
    assert info["vocab_sha256"] == config["files"]["vocab"]["sha256"]
    assert info["vocab_size"] == len(json.loads((smoke_run / "vocab.json").read_text())["itos"]) == enc["vocab_size"]
    assert (info["hidden_size"], info["num_layers"], info["bidirectional"]) == (enc["hidden_size"], enc["num_layers"], enc["bidirectional"])
    assert info["max_tokens"] == config["tokenizer"]["max_length"]
    defaults = ServingSettings()
    assert info["limits"] == {"max_texts": defaults.max_texts, "max_text_chars": defaults.max_text_chars,
                              "max_body_bytes": defaults.max_body_bytes}
    assert info["embedding_size"] == native_hidden(server.url, ["hi"]).shape[-1] * info["num_directions"]
    models = route(server.url, "models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [config["model_name"]]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", http_client=torchserve_http_client(), max_retries=0)
    assert [m.id for m in client.models.list()] == ["gru_encoder"]
    r = route(server.url, "nonsense")
    assert r.status_code == 422 and r.json()["field"] == ROUTE_HEADER


def metric_values(metrics_url: str, name: str) -> dict[str, float]:
    """{label string: value} of one metric on TorchServe's Prometheus endpoint."""
    text = requests.get(metrics_url, timeout=10).text
    return {line.split("{", 1)[1].rsplit("}", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(name + "{")}


def count(values: dict[str, float], **labels: str) -> float:
    return sum(v for k, v in values.items() if all(f'{lab}="{val}"' in k for lab, val in labels.items()))


def test_handler_metrics_count_real_requests(server) -> None:
    metrics_url = f"http://127.0.0.1:{server.settings.metrics_port}/metrics"
    time.sleep(1.5)  # the workers send their sums every 0.5 s: earlier tests' requests arrive before `before`
    before = {name: metric_values(metrics_url, name) for name in
              ("gru_encoder_requests_total", "gru_encoder_texts_total", "gru_encoder_errors_total", "gru_encoder_tokens_total")}
    n = 7
    for _ in range(n):
        route(server.url, "embeddings", {"model": "gru_encoder", "input": ["i am cold .", "hi"]})
    requests.post(f"{server.url}/predictions/gru_encoder", json={"texts": []}, timeout=30)  # one validation_error
    deadline = time.monotonic() + 10
    while True:  # the frontend reads the workers' metric lines asynchronously
        after = {name: metric_values(metrics_url, name) for name in before}
        done = count(after["gru_encoder_requests_total"], route="embeddings", status="200") \
            - count(before["gru_encoder_requests_total"], route="embeddings", status="200")
        if done >= n or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert done == n
    delta = lambda name, **lab: count(after[name], **lab) - count(before[name], **lab)  # noqa: E731
    assert delta("gru_encoder_texts_total", route="embeddings") == 2 * n
    assert delta("gru_encoder_tokens_total", route="embeddings") == n * (5 + 2)  # i am cold . <eos> / hi <eos>
    assert delta("gru_encoder_errors_total", route="predictions", type="validation_error") == 1
    text = requests.get(metrics_url, timeout=10).text
    for stage in ("tokenize", "forward", "serialize"):
        assert f'stage="{stage}"' in text
    assert "gru_encoder_batch_size{" in text and "gru_encoder_batches_total{" in text


def test_an_errors_request_id_is_in_the_handler_log(server) -> None:
    rid = f"test-{uuid.uuid4().hex}"
    r = requests.post(f"{server.url}/predictions/gru_encoder", json={"texts": "   "}, headers={"X-Request-ID": rid}, timeout=30)
    assert r.status_code == 422
    deadline = time.monotonic() + 10
    while rid not in server.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    line = next(line for line in server.output().splitlines() if rid in line)
    assert "status=422" in line and "error=validation_error" in line and "route=predictions" in line


def test_client_splits_past_max_texts_and_learns_the_limit(server) -> None:
    from gru_encoder.client import EncoderClient

    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(150)]  # 64 + 64 + 22 with the default limit
    client = EncoderClient(server.url)
    got = client.encode(texts)
    assert client.max_texts == ServingSettings().max_texts  # asked the server (the route header, no gateway)
    assert got.hidden.shape[1] == 150 and got.output.shape[0] == 150 and len(got.tokens) == 150
    assert got.ids.shape[1] == got.output.shape[1] == int(got.lengths.max())
    for start in (0, 64, 128):  # each slice equals the same texts asked for in one request
        alone = client.encode(texts[start:start + 64])
        n, t = alone.ids.shape
        assert np.abs(got.hidden[:, start:start + n] - alone.hidden).max() <= 1e-5
        assert np.abs(got.output[start:start + n, :t] - alone.output).max() <= 1e-5
        assert not got.output[start:start + n, t:].any() and np.array_equal(got.ids[start:start + n, :t], alone.ids)
    small = EncoderClient(server.url, max_texts=3).encode(texts[:7], return_=("hidden",), h0=got.hidden[:, :7])
    assert small.hidden.shape[1] == 7 and small.output is None
