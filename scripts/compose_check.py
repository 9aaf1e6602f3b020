"""Check a deployed gru-encoder through its gateway, from outside (used by scripts/compose-test.sh).

Sends real requests to URL (the gateway), checks every shape against the run's config, compares the
served tensors with the same run's encoder run here in-process (so the container serves exactly that
model), and checks each promise of the gateway: the API key, the body size and rate limits, the
routes it exposes and refuses, JSON errors in the ErrorResponse shape, and the handler's own errors
passed through byte for byte. Prints one line per check and one served prediction. Exit status 0
when everything holds.

    .venv/bin/python scripts/compose_check.py --url http://127.0.0.1:8080 --run-dir runs/smoke \\
        --api-key "$(cat secrets/api_key)" [--rate-key <second key>] [--max-body 2m]
    .venv/bin/python scripts/compose_check.py --url ... --run-dir ... --api-key ... --outage 120
"""

from __future__ import annotations

import argparse
import io
import json
import secrets
import sys
import time
from pathlib import Path

import numpy as np
import requests
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gru_encoder.artifacts import load_encoder  # noqa: E402
from gru_encoder.schema import ErrorResponse, Limits  # noqa: E402
from gru_encoder.service import EncoderService  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["i am cold .", "he is tall", "Tom didn't know what to say."]
PREDICT = "/predictions/gru_encoder"
NPZ = "application/x-npz"
# Routes TorchServe has (inference, management, metrics, KServe) that the gateway must not expose.
HIDDEN = [
    ("GET", "/metrics"), ("GET", "/models"), ("GET", "/models/gru_encoder"), ("POST", "/models?url=x.mar"),
    ("PUT", "/models/gru_encoder?min_worker=4"), ("DELETE", "/models/gru_encoder"), ("GET", "/api-description"),
    ("OPTIONS", "/"), ("POST", "/predictions/gru_encoder/1.0"), ("POST", "/explanations/gru_encoder"),
    ("POST", "/v1/models/gru_encoder:predict"), ("POST", "/v2/models/gru_encoder/infer"),
]


def size_bytes(size: str) -> int:
    """nginx's size syntax (512k, 2m, 1000) in bytes."""
    units = {"k": 1024, "m": 1024 * 1024}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].lower() in units else int(size)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(r: requests.Response, code: int, type_: str) -> ErrorResponse:
    """The response is exactly an ErrorResponse with this code and type (the project's error contract)."""
    assert r.status_code == code, f"expected {code} {type_}, got {r.status_code}: {r.text[:300]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) <= {"code", "type", "message", "field"}, body
    error = ErrorResponse.model_validate(body)
    assert error.code == code and error.type == type_ and error.message, body
    return error


def check_gateway(args: argparse.Namespace) -> None:
    url, key = args.url, args.api_key
    session = requests.Session()

    def post(body: dict | bytes, headers: dict | None = None, path: str = PREDICT) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers if headers is not None else bearer(key))}
        return session.post(f"{url}{path}", data=data, headers=headers, timeout=60)

    loaded = load_encoder(args.run_dir)
    cfg = loaded.encoder.config
    d = 2 if cfg.bidirectional else 1
    hidden_size, layers = cfg.hidden_size, cfg.num_layers

    # 1. One text, hidden only, with the key: printed whole, as a real served prediction.
    r = post({"texts": ["i am cold ."], "return": ["hidden"]})
    print(f'POST {PREDICT} {{"texts": ["i am cold ."], "return": ["hidden"]}} (Authorization: Bearer <key>) -> {r.status_code}')
    print(r.text)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shapes"]["hidden"] == [layers * d, 1, hidden_size], body["shapes"]
    assert "output" not in body
    assert r.headers.get("X-Server-Batch-Size", "").isdigit(), f"X-Server-Batch-Size lost at the gateway: {r.headers}"

    # 2. A batch, both tensors: shapes, padding, and the same numbers as the encoder run here.
    r = post({"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    batch, seq = len(TEXTS), max(body["lengths"])
    expected_ids = [loaded.tokenizer.encode(t).ids for t in TEXTS]
    assert [row[: len(e)] for row, e in zip(body["ids"], expected_ids)] == expected_ids, "served ids differ from the tokenizer's"
    assert body["lengths"] == [len(e) for e in expected_ids]
    shapes = {"ids": [batch, seq], "lengths": [batch], "output": [batch, seq, d * hidden_size], "hidden": [layers * d, batch, hidden_size]}
    assert body["shapes"] == shapes, (body["shapes"], shapes)
    output = np.asarray(body["output"], np.float32)  # (B, T, D*H)
    hidden = np.asarray(body["hidden"], np.float32)  # (L*D, B, H)
    assert list(output.shape) == shapes["output"] and list(hidden.shape) == shapes["hidden"]
    with torch.no_grad():
        ref_out, ref_hidden = loaded.encoder(torch.tensor(body["ids"]), torch.tensor(body["lengths"]))
    err = max(np.abs(output - ref_out.numpy()).max(), np.abs(hidden - ref_hidden.numpy()).max())
    assert err < 1e-5, f"served tensors differ from the local encoder by {err}"
    for b, n in enumerate(body["lengths"]):
        assert not output[b, n:].any(), "padded output steps must be exactly 0"
    print(f"batch of {batch}: shapes {json.dumps(shapes)}; max |served - local encoder| = {err:.2e}")

    # 3. The binary response passes through the gateway intact (Content-Type, bytes, header).
    r = post({"texts": TEXTS}, {**bearer(key), "Accept": NPZ})
    assert r.status_code == 200 and r.headers.get("Content-Type") == NPZ, (r.status_code, r.headers)
    with np.load(io.BytesIO(r.content)) as npz:
        assert np.array_equal(npz["output"], output) and np.array_equal(npz["hidden"], hidden), "npz tensors differ from JSON's"
    print(f"Accept: {NPZ} -> {r.status_code}, {len(r.content)} bytes, the same tensors bit for bit; "
          f"X-Server-Batch-Size: {r.headers.get('X-Server-Batch-Size')}")

    # 4. The handler's own errors pass through the gateway unchanged: the same status and bytes as
    #    the handler's code gives here in-process (with the archive's limits).
    limits = Limits(**yaml.safe_load((ROOT / "handlers" / "model-config.yaml").read_text())["gru_encoder"]["limits"])
    service = EncoderService(loaded, limits)
    for name, sent in [("empty texts", {"texts": []}), (f"{limits.max_texts + 1} texts", {"texts": ["a"] * (limits.max_texts + 1)})]:
        raw = json.dumps(sent).encode()
        code, expected = service.handle([raw])[0]
        r = post(raw)
        assert (r.status_code, r.content) == (code, expected), f"{name}: gateway {r.status_code} {r.content!r} != handler {code} {expected!r}"
        print(f"{name} -> {r.status_code} {r.json()['type']}, the handler's body byte for byte: {r.text}")

    # 5. The API key: missing, wrong, or in another case -> 401; Bearer in any case and X-API-Key work.
    for name, headers in [("no key", {}), ("wrong key", bearer(secrets.token_urlsafe(32))),
                          ("key in upper case", bearer(key.upper())), ("key as Basic auth", {"Authorization": f"Basic {key}"})]:
        if name == "key in upper case" and key.upper() == key:
            continue
        r = post({"texts": ["i am cold ."]}, headers)
        error_of(r, 401, "unauthorized")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
        print(f"{name} -> 401 unauthorized: {r.text.strip()}")
    for name, headers in [("bearer (lower case scheme)", {"Authorization": f"bearer {key}"}), ("X-API-Key", {"X-API-Key": key})]:
        r = post({"texts": ["i am cold ."], "return": ["hidden"]}, headers)
        assert r.status_code == 200, (name, r.status_code, r.text)
        print(f"{name} -> 200")

    # 6. A body over the gateway's limit -> 413 request_too_large (before TorchServe sees it).
    limit = size_bytes(args.max_body)
    big = b'{"texts": ["' + b"a" * limit + b'"]}'
    r = post(big)
    error_of(r, 413, "request_too_large")
    print(f"{len(big)}-byte body -> 413 request_too_large: {r.text.strip()}")

    # 7. Only the three routes exist: TorchServe's management, metrics and other APIs are 404 (with a key too).
    for method, path in HIDDEN:
        r = session.request(method, f"{url}{path}", headers=bearer(key), timeout=30)
        error_of(r, 404, "not_found")
    print(f"{len(HIDDEN)} other routes ({', '.join(f'{m} {p}' for m, p in HIDDEN)}) -> 404 not_found: {r.text.strip()}")

    # 8. Wrong methods -> 405 with Allow.
    r = session.get(f"{url}{PREDICT}", headers=bearer(key), timeout=30)
    error_of(r, 405, "method_not_allowed")
    assert r.headers.get("Allow") == "POST", r.headers
    print(f"GET {PREDICT} -> 405 method_not_allowed (Allow: POST): {r.text.strip()}")
    r = session.post(f"{url}/ping", timeout=30)
    error_of(r, 405, "method_not_allowed")
    print(f"POST /ping -> 405 (Allow: {r.headers.get('Allow')})")

    # 9. /ping and /health need no key; /health asks the model for a prediction.
    r = session.get(f"{url}/ping", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "Healthy", r.text
    print(f"GET /ping (no key) -> 200 {json.dumps(r.json())}")
    r = session.get(f"{url}/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "healthy", r.text
    print(f"GET /health (no key) -> 200 {r.text.strip()}")

    # 10. Over a key's rate -> 429 rate_limited with Retry-After; another key is not held back.
    if args.rate_key:
        statuses = []
        for _ in range(args.rate_tries):
            r = post({"texts": ["a"], "return": ["hidden"]}, bearer(args.rate_key))
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[-1] == 429, f"no 429 in {len(statuses)} quick requests: {statuses}"
        error_of(r, 429, "rate_limited")
        assert r.headers.get("Retry-After") == "1", r.headers
        print(f"second key, {len(statuses)} quick requests: {statuses.count(200)} x 200, then 429 rate_limited "
              f"(Retry-After: 1): {r.text.strip()}")
        r = post({"texts": ["i am cold ."], "return": ["hidden"]})
        assert r.status_code == 200, r.text
        print("first key at the same moment -> 200 (the limit is per key)")


def watch_outage(args: argparse.Namespace) -> None:
    """While TorchServe restarts: every answer is 200 or a JSON unavailable/overloaded error, until 200s again.

    Prints "watching" after its first 200: the caller kills TorchServe only then, so that a quick
    restart cannot fall between two requests before the watch began.
    """
    seen: dict[tuple[int, str], str] = {}
    deadline = time.monotonic() + args.outage
    t0 = time.monotonic()
    watching = False
    while time.monotonic() < deadline:
        try:
            r = requests.post(f"{args.url}{PREDICT}", json={"texts": ["he is tall"], "return": ["hidden"]},
                              headers=bearer(args.api_key), timeout=70)
        except requests.RequestException as exc:
            raise AssertionError(f"the gateway itself failed while TorchServe restarted: {exc}") from exc
        if r.status_code == 200:
            if seen:
                print(f"200 again after {time.monotonic() - t0:.1f} s: shapes {r.json()['shapes']}", flush=True)
                return
            if not watching:
                watching = True
                t0 = time.monotonic()
                print("watching", flush=True)
        else:
            error = error_of(r, r.status_code, r.json().get("type", "?"))
            assert error.type in ("unavailable", "overloaded"), r.text
            if (r.status_code, error.type) not in seen:
                seen[(r.status_code, error.type)] = r.text.strip()
                print(f"  {time.monotonic() - t0:5.1f} s: {r.status_code} {error.type}: {r.text.strip()}", flush=True)
        time.sleep(0.25)  # 4 requests a second: under the compose test's GATEWAY_RATE of 5r/s
    raise AssertionError(f"no outage seen, or no 200 again, within {args.outage} s: {seen}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the gateway's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--run-dir", required=True, help="the run folder the served .mar was built from")
    parser.add_argument("--api-key", required=True, help="a key the gateway accepts")
    parser.add_argument("--rate-key", default="", help="a second key, spent on showing the 429 (its rate is small in the test)")
    parser.add_argument("--rate-tries", type=int, default=100, help="most requests to send to reach the rate limit")
    parser.add_argument("--max-body", default="2m", help="the gateway's GATEWAY_MAX_BODY_SIZE")
    parser.add_argument("--outage", type=float, default=0, help="instead: watch a TorchServe restart for up to this many seconds")
    args = parser.parse_args(argv)
    if args.outage:
        watch_outage(args)
    else:
        check_gateway(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
