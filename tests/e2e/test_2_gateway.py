"""Through the gateway, from the host: real predictions equal to the same run's encoder run here, the
API key, the body size and per-key rate limits, the three routes it serves and the rest it refuses,
JSON errors in the project's shape, the handler's own errors unchanged, key rotation without a restart,
and keys named in its log by fingerprint only."""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import time

import numpy as np
import pytest

from tests.e2e.gateway import HIDDEN_ROUTES, NPZ, ONE_TEXT, PREDICT, TEXTS, bearer, error_of, size_bytes
from tests.e2e.reference import Reference
from tests.e2e.report import Report
from tests.e2e.stack import GATEWAY_SETTINGS, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


def fingerprint(key: str) -> str:
    """How the gateway names a key in its log: the first 12 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def test_both_services_healthy(stack: Stack, report: Report) -> None:
    project = stack.project
    report.promise(f"both healthy {stack.healthy_after_s:.0f} s after up")
    health_log = project.inspect(stack.torchserve)["State"]["Health"]["Log"]
    report.promise(f"torchserve healthcheck: {health_log[-1]['Output'].strip()}")
    test = project.inspect(stack.gateway)["Config"]["Healthcheck"]["Test"]
    report.promise(f"gateway healthcheck: curl {next(a for a in test if a.startswith('http://'))} -> exit code 0")
    started = [line for line in project.logs(stack.gateway).splitlines() if line.startswith("gateway: ")]
    assert started, "the gateway logged no start line"
    for line in started:
        report.promise(f"gateway log: {line}")


def test_a_prediction_through_the_gateway(stack: Stack, ref: Reference, report: Report) -> None:
    r = stack.client().post(ONE_TEXT)
    report.promise(f"POST {PREDICT} {json.dumps(ONE_TEXT)} (Authorization: Bearer <key>) -> {r.status_code}")
    report.promise(r.text)  # the served prediction itself, into CI's log
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shapes"]["hidden"] == ref.shapes(1, body["lengths"][0])["hidden"], body["shapes"]
    assert "output" not in body
    assert r.headers.get("X-Server-Batch-Size", "").isdigit(), f"X-Server-Batch-Size lost at the gateway: {r.headers}"


def test_every_answer_carries_a_request_id(stack: Stack, report: Report) -> None:
    client = stack.client()
    answers = {
        "200": client.post(ONE_TEXT),
        "401": client.post(ONE_TEXT, headers={"Authorization": "Bearer " + "x" * 30}),
        "404": client.request("GET", "/models"),
        "405": client.request("GET", PREDICT),
        "ping": client.request("GET", "/ping"),
    }
    made = {name: r.headers.get("X-Request-ID", "") for name, r in answers.items()}
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made.values()), made
    assert len(set(made.values())) == len(made), f"request ids repeat: {made}"
    # The caller's own id, when it is a plain token, is kept; anything else is replaced.
    kept = client.post(ONE_TEXT, headers={**bearer(stack.api_key), "X-Request-ID": "order-42.retry:1"})
    assert kept.status_code == 200 and kept.headers["X-Request-ID"] == "order-42.retry:1", kept.headers
    replaced = client.post(ONE_TEXT, headers={**bearer(stack.api_key), "X-Request-ID": "has space; and <more>"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"]), replaced.headers
    log = stack.project.logs(stack.gateway)
    assert '"request_id":"order-42.retry:1"' in log, "the caller's request id is not in the access log"
    report.promise(f"X-Request-ID on every answer ({', '.join(made)}); a caller's own id kept and logged")


def test_a_batch_equals_the_encoder_run_here(stack: Stack, ref: Reference, report: Report) -> None:
    r = stack.client().post({"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    expected_ids = [ref.ids(t) for t in TEXTS]
    served_ids = [row[: len(e)] for row, e in zip(body["ids"], expected_ids, strict=True)]
    assert served_ids == expected_ids, "served ids differ from the tokenizer's"
    assert body["lengths"] == [len(e) for e in expected_ids]
    shapes = ref.shapes(len(TEXTS), max(body["lengths"]))
    assert body["shapes"] == shapes, (body["shapes"], shapes)
    output = np.asarray(body["output"], np.float32)  # (B, T, D*H)
    hidden = np.asarray(body["hidden"], np.float32)  # (L*D, B, H)
    assert list(output.shape) == shapes["output"] and list(hidden.shape) == shapes["hidden"]
    ref_output, ref_hidden = ref.encode(body["ids"], body["lengths"])
    err = max(np.abs(output - ref_output).max(), np.abs(hidden - ref_hidden).max())
    assert err < 1e-5, f"served tensors differ from the local encoder by {err}"
    for b, n in enumerate(body["lengths"]):
        assert not output[b, n:].any(), "padded output steps must be exactly 0"
    report.promise(f"batch of {len(TEXTS)}: shapes {json.dumps(shapes)}; max |served - local encoder| = {err:.2e}")


def test_npz_passes_through_intact(stack: Stack, report: Report) -> None:
    client = stack.client()
    as_json = client.post({"texts": TEXTS}).json()
    r = client.post({"texts": TEXTS}, {**bearer(stack.api_key), "Accept": NPZ})
    assert r.status_code == 200 and r.headers.get("Content-Type") == NPZ, (r.status_code, r.headers)
    with np.load(io.BytesIO(r.content)) as npz:
        for name in ("output", "hidden"):
            assert np.array_equal(npz[name], np.asarray(as_json[name], np.float32)), f"npz {name} differs from JSON's"
    report.promise(f"Accept: {NPZ} -> {r.status_code}, {len(r.content)} bytes, the same tensors bit for bit; "
                   f"X-Server-Batch-Size: {r.headers.get('X-Server-Batch-Size')}")


def test_handler_errors_pass_through_byte_for_byte(stack: Stack, ref: Reference, report: Report) -> None:
    """The same status and bytes as the handler's code gives here in-process (422, and 413 too_many_texts:
    the gateway's own 413 never swallows the handler's)."""
    for name, sent in [("empty texts", {"texts": []}),
                       (f"{ref.max_texts + 1} texts", {"texts": ["a"] * (ref.max_texts + 1)})]:
        raw = json.dumps(sent).encode()
        code, expected = ref.handler_reply(raw)
        r = stack.client().post(raw)
        assert (r.status_code, r.content) == (code, expected), \
            f"{name}: gateway {r.status_code} {r.content!r} != handler {code} {expected!r}"
        assert code in (413, 422), (name, code)
        report.promise(f"{name} -> {r.status_code} {r.json()['type']}, the handler's body byte for byte: {r.text}")


def test_no_or_wrong_key_is_401(stack: Stack, report: Report) -> None:
    key = stack.api_key
    cases = [("no key", {}), ("wrong key", bearer(secrets.token_urlsafe(32))),
             ("key in upper case", bearer(key.upper())), ("key as Basic auth", {"Authorization": f"Basic {key}"})]
    for name, headers in cases:
        if name == "key in upper case" and key.upper() == key:
            continue
        r = stack.client().post({"texts": ["i am cold ."]}, headers)
        error_of(r, 401, "unauthorized")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
        report.promise(f"{name} -> 401 unauthorized: {r.text.strip()}")


def test_bearer_in_any_case_and_x_api_key_are_accepted(stack: Stack, report: Report) -> None:
    for name, headers in [("bearer (lower case scheme)", {"Authorization": f"bearer {stack.api_key}"}),
                          ("X-API-Key", {"X-API-Key": stack.api_key})]:
        r = stack.client().post(ONE_TEXT, headers)
        assert r.status_code == 200, (name, r.status_code, r.text)
        report.promise(f"{name} -> 200")


def test_body_over_the_limit_is_413(stack: Stack, report: Report) -> None:
    limit = size_bytes(GATEWAY_SETTINGS["GATEWAY_MAX_BODY_SIZE"])
    big = b'{"texts": ["' + b"a" * limit + b'"]}'
    r = stack.client().post(big)
    error_of(r, 413, "request_too_large")
    report.promise(f"{len(big)}-byte body -> 413 request_too_large: {r.text.strip()}")


def test_other_routes_are_404(stack: Stack, report: Report) -> None:
    """TorchServe's management, metrics and other APIs are not exposed, with a key neither."""
    time.sleep(2.5)  # a pin to a version not served counts against the key's rate: let the bucket refill first
    client = stack.client()
    for method, path in HIDDEN_ROUTES:
        r = client.request(method, path, bearer(stack.api_key))
        if "?" in path:  # no route takes a query string: refused before routing
            error_of(r, 400, "bad_request")
            continue
        error_of(r, 404, "not_found")
    routes = ", ".join(f"{m} {p}" for m, p in HIDDEN_ROUTES)
    report.promise(f"{len(HIDDEN_ROUTES)} other routes ({routes}) -> 404 not_found (400 bad_request with a query "
                   f"string): {r.text.strip()}")


def test_a_caller_can_pin_the_served_version(stack: Stack, report: Report) -> None:
    """POST /predictions/gru_encoder/<version>: the version the stack serves answers, and says so."""
    time.sleep(1)  # two requests within the key's rate, whatever the tests before spent
    client = stack.client()
    unpinned = client.post(ONE_TEXT)
    version = unpinned.json()["model"]["version"]
    pinned = client.post(ONE_TEXT, path=f"{PREDICT}/{version}")
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["model"] == unpinned.json()["model"] and pinned.headers.get("X-Model-Version") == version
    report.promise(f"POST {PREDICT}/{version} -> 200 from version {version} (X-Model-Version: {version})")


def test_wrong_methods_are_405_with_allow(stack: Stack, report: Report) -> None:
    client = stack.client()
    r = client.request("GET", PREDICT, bearer(stack.api_key))
    error_of(r, 405, "method_not_allowed")
    assert r.headers.get("Allow") == "POST", r.headers
    report.promise(f"GET {PREDICT} -> 405 method_not_allowed (Allow: POST): {r.text.strip()}")
    r = client.request("POST", "/ping")
    error_of(r, 405, "method_not_allowed")
    assert r.headers.get("Allow") == "GET, HEAD", r.headers
    report.promise(f"POST /ping -> 405 (Allow: {r.headers.get('Allow')})")


def test_ping_and_health_need_no_key(stack: Stack, report: Report) -> None:
    client = stack.client()
    r = client.request("GET", "/ping")
    assert r.status_code == 200 and r.json()["status"] == "Healthy", r.text
    report.promise(f"GET /ping (no key) -> 200 {json.dumps(r.json())}")
    r = client.request("GET", "/health")  # a real prediction behind it
    assert r.status_code == 200 and r.json()["status"] == "healthy", r.text
    report.promise(f"GET /health (no key) -> 200 {r.text.strip()}")


def test_rate_limit_is_per_key(stack: Stack, report: Report) -> None:
    """Over a key's rate -> 429 rate_limited with Retry-After; the other key is not held back."""
    # The first key served the tests before this one at their own pace: let its bucket refill (burst 10 at
    # 5r/s: 2 s), so that its 200 below shows the second key's limit alone, not what came before.
    time.sleep(2.5)
    rate_client = stack.client(stack.rate_key)
    statuses = []
    for _ in range(100):
        r = rate_client.post({"texts": ["a"], "return": ["hidden"]})
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429, f"no 429 in {len(statuses)} quick requests: {statuses}"
    error_of(r, 429, "rate_limited")
    assert r.headers.get("Retry-After") == "1", r.headers
    report.promise(f"second key, {len(statuses)} quick requests: {statuses.count(200)} x 200, then 429 rate_limited "
                   f"(Retry-After: 1): {r.text.strip()}")
    r = stack.client().post(ONE_TEXT)
    assert r.status_code == 200, r.text
    report.promise("first key at the same moment -> 200 (the limit is per key)")


def test_key_rotation_with_reload(stack: Stack, report: Report) -> None:
    """A third key appended to the secret file in place, taken up by `gateway-entrypoint --reload`:
    no restart, no downtime."""
    new_key = secrets.token_urlsafe(32)
    body = {"texts": ["he is tall"], "return": ["hidden"]}
    before = stack.client(new_key).post(body).status_code
    assert before == 401, f"a key not yet in the file should get 401, got {before}"
    with stack.key_file.open("a") as f:  # in place: the secret is a bind mount of this very file
        f.write(new_key + "\n")
    stack.added_keys.append(new_key)
    result = stack.project.exec("gateway", "gateway-entrypoint", "--reload")
    for line in (result.stdout + result.stderr).strip().splitlines():
        report.promise(f"reload: {line}")
    assert result.returncode == 0, "gateway-entrypoint --reload failed"
    time.sleep(1)  # nginx's new workers take over
    after = stack.client(new_key).post(body).status_code
    restarts = stack.project.inspect(stack.gateway)["RestartCount"]
    report.promise(f"rotation: a new key -> 401, appended to the secret file, gateway-entrypoint --reload -> {after} "
                   f"(restart count {restarts})")
    assert after == 200, f"the new key should work after the reload, got {after}"
    assert restarts == 0


def test_log_names_keys_by_fingerprint_only(stack: Stack, report: Report) -> None:
    log = stack.project.logs(stack.gateway)
    assert not any(key in log for key in stack.keys), "an API key appears in the gateway's log"
    access = [json.loads(line) for line in log.splitlines() if line.startswith('{"time":')]
    assert access, "the gateway wrote no JSON access log line"
    assert all(re.fullmatch(r"[0-9a-f]{12}|", entry["key"]) for entry in access), "a log line's key is not a fingerprint"
    mine = [entry for entry in access if entry["key"] == fingerprint(stack.api_key)]
    assert mine, "no access log line names the test's key by its fingerprint"
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", entry["request_id"]) for entry in mine)
    access = [json.dumps(entry) for entry in mine]
    report.promise("the gateway's access log names a key by its fingerprint, never the key itself:")
    for line in access[-2:]:
        report.promise(f"  {line}")
