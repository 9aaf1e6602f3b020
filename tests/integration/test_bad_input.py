"""Malformed and unusual requests against a real TorchServe: each gets its documented answer, never a 5xx.

The table is the contract of docs/API.md's error section, case by case: the status, the error `type` and
the `field` it names. A few unusual but valid inputs (emoji, CJK, a NUL inside a sentence, a JSON body
sent as text/plain) are in it too, with the 200 they must get. The whole table is then sent again,
concurrently with good requests, which must still get exactly their tensors.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
import torch

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.client import EncoderClient
from gru_encoder.api.schema import ERROR_BODY
from gru_encoder.host.settings import ServingSettings

pytestmark = pytest.mark.slow
LIMITS = ServingSettings().limits()  # what the test server runs with
MAX_REQUEST_SIZE = 6_553_500  # config.properties: TorchServe's own limit, checked before the handler


@dataclass(frozen=True)
class Case:
    id: str
    body: Any  # bytes as sent, or an object sent as JSON
    status: int
    type: str | None = None  # the ErrorResponse type (None for a 200)
    field: str | None = None
    content_type: str = "application/json"
    text: str | None = None  # for a 200: the text whose tokens must come back

    def data(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def deep(depth: int, leaf: str = '"a"') -> bytes:
    return ('{"texts": ' + "[" * depth + leaf + "]" * depth + "}").encode()


MULTIPART = b'--gru\r\nContent-Disposition: form-data; name="texts"\r\n\r\ni am cold .\r\n--gru--\r\n'

CASES = [
    # Not JSON, or not UTF-8: 400 invalid_json (one parser, orjson, reads every body: strict JSON).
    Case("not-json", b"{not json", 400, "invalid_json"),
    Case("truncated-json", b'{"texts": ["i am cold ."', 400, "invalid_json"),
    Case("empty-body", b"", 400, "invalid_json"),
    Case("utf8-bom", b'\xef\xbb\xbf{"texts": ["a"]}', 400, "invalid_json"),
    Case("invalid-utf8", b"\xff\xfe{}", 400, "invalid_json"),
    Case("latin1-in-a-string", b'{"texts": ["caf\xe9"]}', 400, "invalid_json"),
    Case("lone-surrogate-escape", b'{"texts": ["\\ud800 a"]}', 400, "invalid_json"),
    Case("nan-literal", b'{"texts": ["a"], "h0": [[[NaN]]]}', 400, "invalid_json"),
    Case("number-overflows-to-inf", b'{"texts": ["a"], "h0": [[[1e999]]]}', 400, "invalid_json"),
    Case("nested-5000-deep", deep(5000), 400, "invalid_json"),
    # JSON of the wrong type or shape: 422 validation_error naming the field.
    Case("array-body", [1, 2], 422, "validation_error", "body"),
    Case("string-body", "i am cold .", 422, "validation_error", "body"),
    Case("number-body", 42, 422, "validation_error", "body"),
    Case("null-body", None, 422, "validation_error", "body"),
    Case("texts-missing", {}, 422, "validation_error", "texts"),
    Case("texts-misspelled", {"text": ["a"]}, 422, "validation_error", "texts"),
    Case("extra-field", {"texts": "ok", "extra": 1}, 422, "validation_error", "extra"),
    Case("texts-a-number", {"texts": 3}, 422, "validation_error", "texts"),
    Case("texts-an-object", {"texts": {"a": "b"}}, 422, "validation_error", "texts"),
    Case("number-for-a-text", {"texts": [3]}, 422, "validation_error", "texts[0]"),
    Case("null-for-a-text", {"texts": ["ok", None]}, 422, "validation_error", "texts[1]"),
    Case("nested-500-deep", deep(500), 422, "validation_error", "texts[0]"),
    Case("truncate-a-string", {"texts": "ok", "truncate": "yes"}, 422, "validation_error", "truncate"),
    Case("add_eos-a-number", {"texts": "ok", "add_eos": 0}, 422, "validation_error", "add_eos"),
    Case("return-unknown", {"texts": "ok", "return": ["all"]}, 422, "validation_error", "return[0]"),
    Case("return-empty", {"texts": "ok", "return": []}, 422, "validation_error", "return"),
    Case("return-a-string", {"texts": "ok", "return": "hidden"}, 422, "validation_error", "return"),
    # Empty texts: nothing to encode.
    Case("empty-list", {"texts": []}, 422, "validation_error", "texts"),
    Case("empty-string", {"texts": [""]}, 422, "validation_error", "texts[0]"),
    Case("whitespace-only", {"texts": ["ok", " \t\n\u00a0\u202f"]}, 422, "validation_error", "texts[1]"),
    Case("nul-and-controls-only", {"texts": ["ok", "\x00\x01\x1b\x7f"]}, 422, "validation_error", "texts[1]"),
    # Over the limits (the serving settings): 413 naming the limit.
    Case("text-of-1-MB", {"texts": ["a " * 500_000]}, 413, "input_too_long", "texts[0]"),
    Case("10000-texts", {"texts": ["i am cold ."] * 10_000}, 413, "too_many_texts", "texts"),
    Case("too-many-tokens", {"texts": ["ok", " ".join(["w"] * 200)]}, 413, "input_too_long", "texts[1]"),
    # h0 of the wrong shape or values.
    Case("h0-wrong-shape", {"texts": ["ok"], "h0": [[[0.0] * 3]]}, 422, "validation_error", "h0"),
    Case("h0-ragged", {"texts": ["ok"], "h0": [[[0.0] * 32], [[0.0]]]}, 422, "validation_error", "h0"),
    Case("h0-rank-2", {"texts": ["ok"], "h0": [[0.0, 0.0]]}, 422, "validation_error", "h0[0][0]"),
    Case("h0-a-string", {"texts": ["ok"], "h0": "zeros"}, 422, "validation_error", "h0"),
    Case("h0-nan-as-string", {"texts": ["ok"], "h0": [[["nan"]]]}, 422, "validation_error", "h0[0][0][0]"),
    # Content types: forms are refused (TorchServe splits them into fields); any other type is read as JSON.
    Case("form-urlencoded", b"texts=i+am+cold", 415, "unsupported_media_type", content_type="application/x-www-form-urlencoded"),
    Case("multipart-form", MULTIPART, 415, "unsupported_media_type", content_type="multipart/form-data; boundary=gru"),
    Case("json-as-text-plain", {"texts": ["i am cold ."]}, 200, content_type="text/plain", text="i am cold ."),
    Case("json-as-octet-stream", {"texts": ["i am cold ."]}, 200, content_type="application/octet-stream", text="i am cold ."),
    # Unusual but valid text: 200 with the tokenizer's own tokens.
    Case("emoji", {"texts": ["i \u2764\ufe0f you \U0001f600"]}, 200, text="i \u2764\ufe0f you \U0001f600"),
    Case("cjk", {"texts": ["\u6211\u7231\u4f60"]}, 200, text="\u6211\u7231\u4f60"),
    Case("nul-inside-a-sentence", {"texts": ["i am\x00 cold ."]}, 200, text="i am\x00 cold ."),
    Case("rtl-and-combining", {"texts": ["cafe\u0301 \u05e9\u05dc\u05d5\u05dd"]}, 200, text="cafe\u0301 \u05e9\u05dc\u05d5\u05dd"),
]
# TorchServe refuses a body over max_request_size itself, before the handler, with an EMPTY 413 body:
# the gateway (docker/gateway) answers that case with JSON in the deployment (tests/e2e).
OVER_SIZE = Case("body-over-max_request_size", b'{"texts": ["' + b"a" * MAX_REQUEST_SIZE + b'"]}', 413)


def post(server, case: Case) -> requests.Response:
    return requests.post(
        f"{server.url}/predictions/gru_encoder", data=case.data(), headers={"Content-Type": case.content_type}, timeout=30
    )


def check(case: Case, r: requests.Response, tokenizer) -> None:
    assert r.status_code == case.status, (case.id, r.status_code, r.text[:300])
    if case is OVER_SIZE:
        return
    assert r.headers["Content-Type"].startswith("application/json"), (case.id, r.headers)
    body = r.json()
    if case.status == 200:
        enc = tokenizer.encode(case.text)
        assert body["tokens"] == [enc.tokens] and body["ids"] == [enc.ids], case.id
        return
    err = ERROR_BODY.validate_python(body)  # the documented error body, nothing else
    assert (err.code, err.type, err.field) == (case.status, case.type, case.field), (case.id, body)
    assert err.message


def test_the_table_covers_what_the_issue_lists() -> None:
    assert len(CASES) + 1 >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {c.status for c in CASES} >= {200, 400, 413, 415, 422}
    assert any(len(c.data()) > 1_000_000 for c in CASES)  # a 1 MB text
    assert LIMITS.max_texts < 10_000 and LIMITS.max_text_chars < 1_000_000  # so those two are over the limits


@pytest.fixture(scope="module")
def tokenizer(smoke_run):
    return load_encoder(smoke_run).tokenizer


@pytest.mark.parametrize("case", [*CASES, OVER_SIZE], ids=lambda c: c.id)
def test_each_case_gets_its_documented_answer(server, tokenizer, case: Case) -> None:
    check(case, post(server, case), tokenizer)
    assert EncoderClient(server.url).healthy()


def test_the_table_sent_with_good_requests_fails_none_of_them(server, smoke_run, tokenizer) -> None:
    loaded = load_encoder(smoke_run)
    good_text = "He is very tall and she is not, I think."
    with torch.no_grad():
        _, want_hidden = loaded.encoder(torch.tensor([loaded.tokenizer.encode(good_text).ids]))  # (L*D, 1, H)
    good = Case("good", {"texts": [good_text], "return": ["hidden"]}, 200, text=good_text)
    jobs = [*CASES, OVER_SIZE] * 2 + [good] * 80

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda case: (case, post(server, case)), jobs))
    for case, r in results:
        check(case, r, tokenizer)
        if case is good:
            np.testing.assert_allclose(np.asarray(r.json()["hidden"], np.float32), want_hidden.numpy(), atol=1e-5, rtol=0)
    # Still healthy, and no worker was ever restarted (a crash would have started another).
    assert EncoderClient(server.url).healthy()
    assert server.output().count("Torch worker started.") == server.settings.workers
