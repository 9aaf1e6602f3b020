"""Requests to the gateway from the host, as a client sends them, and the checks of its JSON errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import requests

from gru_encoder.api.routes import NATIVE_PATH
from tests.e2e.reference import parse_error

PREDICT = NATIVE_PATH  # the route table's native route
NPZ = "application/x-npz"
TEXTS = ["i am cold .", "he is tall", "Tom didn't know what to say."]
ONE_TEXT = {"texts": ["i am cold ."], "return": ["hidden"]}
# Routes TorchServe has (inference, management, metrics, KServe, a version it does not serve) that the
# gateway must not expose.
HIDDEN_ROUTES = [
    ("GET", "/metrics"), ("GET", "/models"), ("GET", "/models/gru_encoder"), ("POST", "/models?url=x.mar"),
    ("PUT", "/models/gru_encoder?min_worker=4"), ("DELETE", "/models/gru_encoder"), ("GET", "/api-description"),
    ("OPTIONS", "/"), ("POST", "/predictions/gru_encoder/9.9"), ("POST", "/predictions/gru_encoder/1.0/x"),
    ("POST", "/predictions/other_model"), ("POST", "/explanations/gru_encoder"),
    ("POST", "/v1/models/gru_encoder:predict"), ("POST", "/v2/models/gru_encoder/infer"),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def size_bytes(size: str) -> int:
    """nginx's size syntax (512k, 2m, 1000) in bytes."""
    units = {"k": 1024, "m": 1024 * 1024}
    unit = size[-1].lower()
    return int(size[:-1]) * units[unit] if unit in units else int(size)


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:<published port>
    key: str  # sent as Authorization: Bearer unless a call gives its own headers
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, body: dict | bytes, headers: dict[str, str] | None = None, path: str = PREDICT,
             timeout: float = 60) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers if headers is not None else bearer(self.key))}
        return self.session.post(f"{self.url}{path}", data=data, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self.session.request(method, f"{self.url}{path}", headers=headers or {}, timeout=30)


def error_of(r: requests.Response, code: int, type_: str) -> None:
    """The response is exactly the project's error with this status and type, as JSON."""
    assert r.status_code == code, f"expected {code} {type_}, got {r.status_code}: {r.text[:300]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    if set(body) == {"error"}:  # OpenAI's shape, on /v1/*: the same status, the project's type as `code`
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        body = {"code": r.status_code, "type": body["error"]["code"], "message": body["error"]["message"]}
    assert set(body) <= {"code", "type", "message", "field"}, body
    error = parse_error(body)
    assert error.code == code and error.type == type_ and error.message, body
