"""`make serve`'s local gateway: the deployed gateway's nginx configuration run with the host's nginx in
front of a real TorchServe, without Docker and without keys (the local default). The public routes
answer as behind the deployed gateway, in the same error shapes (tests/e2e checks the container)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import openai
import pytest
import requests

from gru_encoder.api.routes import ROUTES
from loadtests.torchserve_process import TorchServe

pytestmark = pytest.mark.slow
TEXTS = ["i am cold .", "He is very tall and she is not, I think.", "zorblax quux!", "我爱你"]


@pytest.fixture(scope="module")
def local(smoke_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    ts = TorchServe(smoke_mar, tmp_path_factory.mktemp("local_gateway"), gateway="local").start()
    yield ts
    ts.stop()


def test_every_public_route_answers_without_a_key(local: TorchServe) -> None:
    answered = {}
    for route in ROUTES:
        method = route.methods[0]
        body = {"texts": ["i am cold ."]} if route.path.startswith("/predictions") else {"input": "i am cold .", "model": "gru_encoder"}
        path = route.path.replace("{version}", "1.0")  # the pinned route, with the one served version
        r = requests.request(method, local.url + path, json=body if method == "POST" else None, timeout=30)
        answered[route.path] = r.status_code
        assert r.headers["Content-Type"].startswith("application/json") and r.headers.get("X-Request-ID"), route.path
    assert answered == {r.path: 200 for r in ROUTES}
    info = requests.get(f"{local.url}/info", timeout=30).json()
    assert info["name"] == "gru_encoder" and info["limits"]["max_texts"] == local.settings.max_texts
    # TorchServe itself sits behind, on its own port; its management API is not reachable through the gateway.
    assert local.torchserve_url != local.url
    assert requests.get(f"{local.url}/models", timeout=10).status_code == 404


def test_the_openai_package_gets_the_native_hidden_state(local: TorchServe) -> None:
    client = openai.OpenAI(base_url=f"{local.url}/v1", api_key="any-key-locally", max_retries=0)
    r = requests.post(f"{local.url}/predictions/gru_encoder", json={"texts": TEXTS, "return": ["hidden"]}, timeout=30)
    body = r.json()
    ref = np.asarray(body["hidden"], np.float32).reshape(body["shapes"]["hidden"])[-1]
    got = client.embeddings.create(model="gru_encoder", input=TEXTS)
    vectors = np.asarray([d.embedding for d in sorted(got.data, key=lambda d: d.index)], np.float32)
    assert vectors.shape == ref.shape and np.abs(vectors - ref).max() <= 1e-6
    assert [m.id for m in client.models.list().data] == ["gru_encoder"]


@pytest.mark.parametrize(("method", "path", "body", "status", "shape", "type_"), [
    ("GET", "/nowhere", None, 404, "native", "not_found"),
    ("GET", "/v1/nowhere", None, 404, "openai", "not_found"),
    ("GET", "/predictions/gru_encoder", None, 405, "native", "method_not_allowed"),
    ("POST", "/v1/models", {}, 405, "openai", "method_not_allowed"),
    ("POST", "/predictions/gru_encoder", {"texts": []}, 422, "native", "validation_error"),
    ("POST", "/v1/embeddings", {"input": [], "model": "gru_encoder"}, 422, "openai", "validation_error"),
    ("POST", "/v1/embeddings", {"input": "a", "model": "other"}, 422, "openai", "validation_error"),
    ("POST", "/predictions/gru_encoder?key=x", {"texts": ["a"]}, 400, "native", "bad_request"),
], ids=["404", "404-v1", "405", "405-v1", "422", "422-v1", "model-v1", "query"])
def test_errors_come_in_the_routes_shape(local: TorchServe, method: str, path: str, body: dict | None, status: int, shape: str,
                                         type_: str) -> None:
    r = requests.request(method, local.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    data = r.json()
    if shape == "openai":
        assert set(data) == {"error"} and data["error"]["code"] == type_, data
    else:
        assert data["code"] == status and data["type"] == type_, data
    if status == 405:
        assert r.headers["Allow"] in ("POST", "GET")


def test_a_caller_cannot_pick_the_handlers_route(local: TorchServe) -> None:
    """The gateway sets the route header from the path: a caller's own header never reaches the handler."""
    r = requests.post(f"{local.url}/predictions/gru_encoder", json={"texts": ["i am cold ."]},
                      headers={"X-Gru-Encoder-Route": "info"}, timeout=30)
    assert r.status_code == 200 and "tokens" in r.json()


def wait_healthy(ts: TorchServe, timeout: float = 180) -> None:
    """/health needs no key: 200 once the model answers the gateway's probe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert ts.proc is not None and ts.proc.poll() is None, ts.output()[-3000:]
        try:
            if requests.get(f"{ts.url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(ts.output()[-3000:])


def test_keys_on_ask_for_a_key(smoke_mar: Path, tmp_path: Path) -> None:
    key = "Zx3vQ9-abcdefghijklmnopqrstuvwxyz_0123456789"
    (tmp_path / "api_key").write_text(f"{key}\n")
    ts = TorchServe(smoke_mar, tmp_path / "ts", gateway="local", api_keys=str(tmp_path / "api_key"), workers=1).launch()
    try:
        wait_healthy(ts)
        r = requests.get(f"{ts.url}/info", timeout=10)
        assert r.status_code == 401 and r.json()["type"] == "unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert requests.get(f"{ts.url}/info", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
        v1 = requests.get(f"{ts.url}/v1/models", timeout=10)
        assert v1.status_code == 401 and v1.json()["error"]["type"] == "authentication_error"
    finally:
        ts.stop()
