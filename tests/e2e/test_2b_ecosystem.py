"""Through the gateway, the other dialects and what operators see: the official `openai` package on
/v1/embeddings and /v1/models, /info against the run's config.json, an error's request id in the
handler's log, the client riding out a 429, and the `monitoring` profile's Prometheus counting real
requests with every metric the committed dashboard queries."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path

import numpy as np
import openai
import pytest
import requests

from gru_encoder.client import EncoderClient
from gru_encoder.api.contract import ROUTE_HEADER
from gru_encoder.host.settings import ServingSettings
from tests import ROOT
from tests.e2e.gateway import PREDICT, TEXTS, bearer, error_of
from tests.e2e.report import Report
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

PACE_S = 0.25  # 4 requests a second: under the test's per-key rate of 5r/s
DASHBOARD = ROOT / "docker" / "monitoring" / "grafana-dashboard.json"


def paced(fn, *args, **kwargs):
    time.sleep(PACE_S)
    return fn(*args, **kwargs)


def native_hidden(stack: Stack, texts: list[str]) -> np.ndarray:
    r = paced(stack.client().post, {"texts": texts, "return": ["hidden"]})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["hidden"], np.float32)


def openai_client(stack: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key or stack.api_key, max_retries=3)


def test_openai_package_through_the_gateway_equals_the_native_route(stack: Stack, report: Report) -> None:
    client = openai_client(stack)
    ref = native_hidden(stack, TEXTS)[-1]  # (B, H): the last layer's final hidden state
    as_floats = paced(client.embeddings.create, model="gru_encoder", input=TEXTS, encoding_format="float")
    raw = paced(requests.post, f"{stack.url}/v1/embeddings", headers=bearer(stack.api_key), timeout=30,
                json={"model": "gru_encoder", "input": TEXTS, "encoding_format": "base64"})
    assert raw.status_code == 200 and raw.headers.get("X-Request-ID"), raw.text
    from_b64 = np.asarray([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in raw.json()["data"]])
    floats = np.asarray([d.embedding for d in as_floats.data], np.float32)
    diff = float(np.abs(floats - ref).max())
    assert diff <= 1e-6 and float(np.abs(from_b64 - ref).max()) <= 1e-6
    report.promise(f"openai {openai.__version__} embeddings.create through the gateway: {len(TEXTS)} vectors of "
                   f"{floats.shape[1]}, max |float - native hidden[-1]| = {diff:.1e}; base64 decodes to the same floats "
                   f"(max diff {float(np.abs(from_b64 - ref).max()):.1e}); usage {as_floats.usage.model_dump()}")
    models = paced(client.models.list)
    assert [m.id for m in models] == ["gru_encoder"]


def test_openai_errors_through_the_gateway(stack: Stack, report: Report) -> None:
    with pytest.raises(openai.AuthenticationError) as exc:
        openai_client(stack, key="x" * 30).embeddings.create(model="gru_encoder", input="hi")
    assert exc.value.status_code == 401 and exc.value.body["code"] == "unauthorized"
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        paced(openai_client(stack).embeddings.create, model="gru_encoder", input=["ok", " "])
    assert exc.value.body["param"] == "input[1]" and exc.value.body["code"] == "validation_error"
    report.promise(f"openai package, bad input through the gateway -> 422 {json.dumps(exc.value.body)}")
    client = stack.client()
    for method, path, status, type_ in [("GET", "/v1/embeddings", 405, "method_not_allowed"),
                                        ("POST", "/v1/chat/completions", 404, "not_found")]:
        r = paced(client.session.request, method, f"{stack.url}{path}", headers=bearer(stack.api_key), timeout=30)
        error_of(r, status, type_)
        assert set(r.json()) == {"error"}, r.text
        report.promise(f"{method} {path} -> {status} {r.text.strip()}")


def test_info_equals_the_served_config(stack: Stack, served_run: Path, report: Report) -> None:
    config = json.loads((served_run / "config.json").read_text())
    r = paced(stack.client().request, "GET", "/info", headers=bearer(stack.api_key))
    assert r.status_code == 200, r.text
    info = r.json()
    report.promise(f"GET /info -> {r.text.strip()}")
    enc = config["encoder"]
    assert info["weights_sha256"] == config["files"]["weights"]["sha256"] and info["name"] == config["model_name"]
    assert (info["vocab_size"], info["hidden_size"], info["num_layers"], info["bidirectional"]) == \
        (enc["vocab_size"], enc["hidden_size"], enc["num_layers"], enc["bidirectional"])
    assert info["max_tokens"] == config["tokenizer"]["max_length"]
    settings = ServingSettings.from_env(stack.project.env)  # what the container resolves from the same variables
    assert info["limits"]["max_texts"] == settings.max_texts and info["limits"]["max_body_bytes"] == settings.max_body_bytes
    # The image carries the batch-fill agent and TorchServe's Java applied it (java/BatchFillAgent.java).
    assert info["batching"]["batch_fill"] == settings.batch_fill == "queued"
    assert "gru-encoder batch fill: queued" in stack.project.logs(stack.torchserve)
    error_of(paced(stack.client().request, "GET", "/info"), 401, "unauthorized")
    # A caller's own route header never reaches the handler: the native route still answers natively.
    r = paced(stack.client().post, {"texts": ["hi"], "return": ["hidden"]}, {**bearer(stack.api_key), ROUTE_HEADER: "info"})
    assert r.status_code == 200 and "shapes" in r.json(), r.text


def test_an_errors_request_id_is_in_the_handler_log(stack: Stack, report: Report) -> None:
    rid = f"e2e-{uuid.uuid4().hex}"
    r = paced(stack.client().post, {"texts": "   "}, {**bearer(stack.api_key), "X-Request-ID": rid})
    assert r.status_code == 422 and r.headers["X-Request-ID"] == rid, r.text
    deadline = time.monotonic() + 20
    while True:
        lines = [line for replica in stack.replicas for line in stack.project.logs(replica).splitlines() if rid in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert lines, f"request id {rid} of a 422 not in either torchserve replica's log"
    assert "status=422" in lines[-1] and "error=validation_error" in lines[-1]
    report.promise(f"X-Request-ID {rid} of a 422 -> torchserve log: {lines[-1].strip()[-160:]}")


def test_client_with_api_key_rides_out_a_429(stack: Stack, report: Report) -> None:
    """Spend the key's burst, then the client's first request gets 429 and waits Retry-After."""
    time.sleep(3)  # earlier tests' requests leave the rate's bucket
    quick = requests.Session()
    for attempt in range(3):
        statuses = [quick.post(f"{stack.url}{PREDICT}", json={"texts": ["a"], "return": ["hidden"]},
                               headers=bearer(stack.rate_key), timeout=30).status_code for _ in range(16)]
        assert 429 in statuses, statuses
        client = EncoderClient(stack.url, api_key=stack.rate_key, retries=5, max_texts=64)
        resp = client.post({"texts": TEXTS, "return": ["hidden"]})
        history = [h.status for h in resp.raw.retries.history] if resp.raw.retries else []
        if 429 in history:
            break
        time.sleep(3)
    assert resp.status_code == 200 and 429 in history, history
    report.promise(f"EncoderClient(api_key=...) after the key's burst: answers {history} then 200 (Retry-After honoured)")


def prometheus_query(url: str, expr: str) -> list[dict]:
    r = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return r.json()["data"]["result"]


def scalar(url: str, expr: str) -> float:
    result = prometheus_query(url, expr)
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_counts_real_requests_and_has_every_dashboard_metric(stack: Stack, report: Report) -> None:
    project = stack.project
    t0 = time.monotonic()
    project.compose("up", "-d", "--no-build", "prometheus", timeout=180)
    url = f"http://127.0.0.1:{project.settings['PROMETHEUS_PORT']}"
    deadline = time.monotonic() + 120
    while True:
        try:
            targets = {t["labels"]["job"]: t["health"] for t in
                       requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]}
        except (requests.RequestException, ValueError, KeyError):
            targets = {}
        if targets.get("torchserve") == "up" and targets.get("gateway") == "up":
            break
        assert time.monotonic() < deadline, f"Prometheus targets not up within 120 s: {targets}"
        time.sleep(2)
    report.promise(f"monitoring profile up, targets {targets}, after {time.monotonic() - t0:.0f} s")
    query = 'sum(gru_encoder_requests_total{route="embeddings",status="200"})'
    time.sleep(6)  # one scrape interval (5 s): everything sent so far is in the value below
    before = scalar(url, query)
    n = 8
    client = stack.client()
    for _ in range(n):
        r = paced(client.post, {"model": "gru_encoder", "input": ["i am cold .", "hi"]}, path="/v1/embeddings")
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while (after := scalar(url, query)) - before < n and time.monotonic() < deadline:
        time.sleep(1)
    report.promise(f"Prometheus: {query} = {after:.0f} after {n} requests ({before:.0f} before)")
    assert after - before == n
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    names = sorted({name for expr in exprs for name in re.findall(r"\b(gru_encoder_\w+|ts_\w+|nginx_\w+|up)\b(?!\s*\()", expr)})
    missing = [name for name in names if not prometheus_query(url, f'count({{__name__="{name}"}})')]
    assert not missing, f"the dashboard queries metrics Prometheus does not have: {missing}"
    for expr in exprs:
        prometheus_query(url, expr)  # every panel's query is valid PromQL
    report.promise(f"all {len(names)} metrics of the dashboard's {len(exprs)} panels are in Prometheus: {', '.join(names)}")
