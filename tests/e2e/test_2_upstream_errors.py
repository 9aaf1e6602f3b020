"""TorchServe's own errors through the real gateway image: a stand-in for TorchServe (Python's http.server
in the TorchServe image, on a network of the test's own) answers what TorchServe answers when a worker
dies (500, 507 "Worker died."), its queue is full (503) or the model is not loaded (404), and what the
handler answers (400, 413, 422 in the project's shape). The first reach callers as the project's JSON,
status kept (404 as 503 `unavailable`); the handler's pass byte for byte; and the stand-in sees only the
headers the gateway means to send."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gateway import PREDICT, bearer
from tests.e2e.project import IMAGES, PROJECT, Project
from tests.e2e.reference import parse_error, status_of_type
from tests.e2e.report import Report

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

NAME = PROJECT.removeprefix("gru-encoder-") + "-standin"  # wt14-standin for COMPOSE_TEST_NAME=wt14
# Answers a POST with the status its JSON body names: TorchServe's own bodies for its errors, the
# handler's shape for the handler's; a 200 echoes the headers it received.
STANDIN = r'''
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
TORCHSERVE = {500: "InternalServerException", 507: "InternalServerException", 503: "ServiceUnavailableException",
              404: "ModelNotFoundException"}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        status = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))).get("status", 200)
        if status == 200:
            body = {"headers": dict(self.headers)}
        elif status in TORCHSERVE:
            body = {"code": status, "type": TORCHSERVE[status], "message": "Worker died." if status in (500, 507) else "no"}
        else:
            body = {"code": status, "type": {400: "invalid_json", 413: "too_many_texts", 422: "validation_error"}[status], "message": "the handler's"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
'''


@pytest.fixture(scope="module")
def gateway(project: Project) -> Iterator[tuple[str, str]]:
    """(url, key) of the gateway image in front of the stand-in; both removed at the end."""
    key = secrets.token_urlsafe(32)
    names = (NAME, NAME + "-gateway")
    project.docker("network", "create", NAME)
    try:
        project.docker("run", "-d", "--name", NAME, "--network", NAME, "--entrypoint", "python3", IMAGES["IMAGE"], "-c", STANDIN)
        project.docker("run", "-d", "--name", names[1], "--network", NAME, "-p", "127.0.0.1::8080", "--read-only",
                       "--tmpfs", "/tmp", "-e", f"GATEWAY_API_KEYS={key}", "-e", f"GATEWAY_UPSTREAM={NAME}:8080",
                       IMAGES["GATEWAY_IMAGE"])
        port = project.docker("port", names[1], "8080/tcp").stdout.split(":")[-1].strip()
        url = f"http://127.0.0.1:{port}"
        for _ in range(60):
            try:
                if requests.post(url + PREDICT, json={"status": 200}, headers=bearer(key), timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield url, key
    finally:
        project.docker("rm", "-f", *names, check=False)
        project.docker("network", "rm", NAME, check=False)


@pytest.mark.parametrize("status, expected, type_", [
    (500, 500, "internal_error"), (507, 507, "internal_error"), (503, 503, "overloaded"), (404, 503, "unavailable"),
])
def test_torchserves_own_errors_become_the_projects_json(gateway: tuple[str, str], status: int, expected: int,
                                                         type_: str, report: Report) -> None:
    url, key = gateway
    r = requests.post(url + PREDICT, json={"status": status}, headers=bearer(key), timeout=30)
    error = parse_error(r.json())
    assert (r.status_code, error.code, error.type) == (expected, expected, type_), r.text
    assert status_of_type(r.status_code, error.type) and r.headers["Content-Type"].startswith("application/json")
    report.promise(f"TorchServe's {status} -> {r.status_code} {r.text.strip()}")


@pytest.mark.parametrize("status", [400, 413, 422])
def test_the_handlers_errors_pass_unchanged(gateway: tuple[str, str], status: int) -> None:
    url, key = gateway
    r = requests.post(url + PREDICT, json={"status": status}, headers=bearer(key), timeout=30)
    assert r.status_code == status and r.json()["message"] == "the handler's", r.text


def test_torchserve_gets_only_the_headers_the_gateway_sends(gateway: tuple[str, str], report: Report) -> None:
    url, key = gateway
    extra = {"Cookie": "a=b", "X-Auth-Token": key, "X-API-Key": key, "Content-Encoding": "gzip", "X-Big": "a" * 7000,
             "Accept": "application/x-npz", "X-Request-ID": "order-42"}
    r = requests.post(url + PREDICT, json={"status": 200}, headers={**bearer(key), **extra}, timeout=30)
    assert r.status_code == 200, r.text
    received = json.loads(r.content)["headers"]
    assert set(received) == {"Host", "Content-Type", "Accept", "X-Request-ID", "Content-Length"}, received
    assert received["Accept"] == "application/x-npz" and received["X-Request-ID"] == "order-42"
    assert key not in json.dumps(received)
    report.promise(f"what TorchServe receives, whatever the caller sent: {json.dumps(received)}")
