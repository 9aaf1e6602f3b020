"""Every error body is small whatever the request: echoed input is quoted short, ErrorBody caps itself.

An error that echoed its input grew with it: a 1.1 MB body whose one unknown field name is 280,000
emoji got a 6.7 MB answer (the name twice, each emoji escaped to 12 bytes), over TorchServe's
max_response_size, which lost the worker and every request batched with it. hypothesis now searches
for a request, native or OpenAI's, whose error grows with its input.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from gru_encoder.api.contract import ERRORS, MAX_ERROR_BYTES, QUOTE_CHARS, ErrorBody, RequestError, quote
from gru_encoder.api.openai_api import openai_error, parse_embeddings_request
from gru_encoder.api.schema import ERROR_BODY, Limits
from gru_encoder.api.service import EncoderService, parse_body
from gru_encoder.core.artifacts import load_encoder

MODEL, DIM = "gru_encoder", 32
EMOJI_FIELD = orjson.dumps({"texts": ["a"], "\U0001F600" * 280_000: 1})  # 1.1 MB
HUGE_MODEL = orjson.dumps({"input": "i am cold .", "model": "m" * 1_000_000})


@pytest.fixture(scope="module")
def service(smoke_run: Path) -> EncoderService:
    return EncoderService(load_encoder(smoke_run), Limits())


def native_error(service: EncoderService, body: bytes) -> ErrorBody | None:
    """The native route's error for a raw body (None when it would be encoded)."""
    try:
        service.check_response_size(service.prepare(parse_body(body, service.limits)))
    except RequestError as e:
        return e.error
    return None


def openai_answer(body: bytes) -> ErrorBody | None:
    try:
        parse_embeddings_request(body, MODEL, DIM)
    except RequestError as e:
        return e.error
    return None


def sizes(error: ErrorBody) -> tuple[int, int]:
    """Bytes of the error as each dialect writes it: native, OpenAI's."""
    return len(error.to_json()), len(openai_error(error))


def test_the_bound_holds_for_the_largest_error_anyone_can_build() -> None:
    worst = ErrorBody(599, "x" * 10**6, "\U0001F600" * 10**6, "\ud800" * 10**6)  # 12 and 6 bytes a character
    for error in (worst, ErrorBody(599, "x" * 10**6, "\x00" * 10**6)):
        assert max(sizes(error)) <= MAX_ERROR_BYTES, sizes(error)
        assert ErrorBody.parse(error.to_json()) == error  # what is cut is cut once: parsing keeps it
    assert len(str(RequestError("validation_error", "m" * 10**6))) < MAX_ERROR_BYTES
    assert ERROR_BODY.validate_python({"code": 422, "type": "validation_error", "message": "m" * 10**6}).message.endswith(
        "… (cut, 1,000,000 characters)")
    with pytest.raises(ValueError, match="HTTP status"):
        ErrorBody(10**6, "internal_error", "m")


def test_quote_shows_a_short_prefix_and_the_size() -> None:
    assert quote("abc") == "'abc'" and quote("abc", bare=True) == "abc"
    assert quote("a" * 280_000) == f"'{'a' * QUOTE_CHARS}…' (280,000 characters)"
    assert quote("a" * 280_000, bare=True) == f"{'a' * QUOTE_CHARS}… (280,000 characters)"
    assert quote(list(range(10**6))).endswith("(1,000,000 items)") and len(quote(list(range(10**6)))) < 100
    assert len(quote(10**5000)) < 100  # past Python's int-to-str limit: no ValueError
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    assert len(quote(deep)) < 100


def test_a_1_mb_field_name_gets_a_small_422_at_once(service: EncoderService) -> None:
    start = time.perf_counter()
    error = native_error(service, EMOJI_FIELD)
    body = error.to_json()
    elapsed = time.perf_counter() - start
    assert error.code == 422 and error.type == "validation_error", error
    assert len(body) < 2000 and elapsed < 0.25, (len(body), elapsed)  # was 6,720,094 bytes
    assert "(280,000 characters)" in error.message and error.field.endswith("… (280,000 characters)")
    assert error.message.endswith(": Extra inputs are not permitted")


def test_a_1_mb_model_on_v1_embeddings_gets_a_small_422_at_once() -> None:
    start = time.perf_counter()
    error = openai_answer(HUGE_MODEL)
    body = openai_error(error)
    elapsed = time.perf_counter() - start
    assert error.code == 422 and error.field == "model", error
    assert len(body) < 400 and elapsed < 0.25, (len(body), elapsed)  # was 1,000,143 bytes
    message = json.loads(body)["error"]["message"]
    assert message == f"model '{'m' * QUOTE_CHARS}…' (1,000,000 characters) is not served here: use 'gru_encoder'"


# A request's shape with one hole, filled with a string `s` that hypothesis makes as long as it likes:
# every position a caller controls (a field's name, every field's value, nested deep, a key inside a
# value, the body itself, the JSON's own syntax).
def js(value) -> bytes:
    return json.dumps(value).encode()  # ASCII escapes: lone surrogates travel as \ud800, as a caller may send them


NATIVE: dict[str, Callable[[str], bytes]] = {
    "field-name": lambda s: js({"texts": ["a"], s: 1}),
    "many-field-names": lambda s: js({"texts": ["a"], **{f"{s}{i}": i for i in range(5)}}),
    "nested-field-name": lambda s: js({"texts": [{s: s}], "return": {s: 1}}),
    "text": lambda s: js({"texts": [s]}),
    "texts-a-string": lambda s: js({"texts": s, "h0": [[[1.0]]]}),
    "texts-an-object": lambda s: js({"texts": {s: s}}),
    "many-texts": lambda s: js({"texts": [s[:8]] * len(s)}),
    "many-bad-texts": lambda s: js({"texts": [1] * min(len(s), 60)}),
    "return": lambda s: js({"texts": ["a"], "return": [s, "hidden"]}),
    "return-a-string": lambda s: js({"texts": ["a"], "return": s}),
    "h0": lambda s: js({"texts": ["a"], "h0": [[[s]]]}),
    "h0-a-string": lambda s: js({"texts": ["a"], "h0": s}),
    "h0-huge": lambda s: js({"texts": ["a"], "h0": [[[0.5] * len(s)] * 3]}),
    "h0-ragged": lambda s: js({"texts": ["a"], "h0": [[[0.5] * len(s), [0.5]]]}),
    "truncate": lambda s: js({"texts": ["a"], "truncate": s}),
    "add_eos": lambda s: js({"texts": ["a"], "add_eos": s}),
    "deep-texts": lambda s: b'{"texts": ' + b"[" * len(s) + b'"a"' + b"]" * len(s) + b"}",
    "deep-h0": lambda s: b'{"texts": ["a"], "h0": ' + b"[" * len(s) + b"1.0" + b"]" * len(s) + b"}",
    "body-a-string": lambda s: js(s),
    "body-a-list": lambda s: js([s] * 3),
    "not-json": lambda s: b'{"texts": ["' + s.encode("utf-8", "surrogatepass"),
    "not-utf8": lambda s: js({"texts": [s]}) + b"\xff",
    "huge-number": lambda s: b'{"texts": ["a"], "h0": [[[' + b"9" * len(s) + b"]]]}",
}
OPENAI: dict[str, Callable[[str], bytes]] = {
    "model": lambda s: js({"input": "a", "model": s}),
    "model-an-object": lambda s: js({"input": "a", "model": {s: s}}),
    "field-name": lambda s: js({"input": "a", "model": MODEL, s: 1}),
    "input": lambda s: js({"input": s, "model": MODEL}),
    "input-with-a-number": lambda s: js({"input": [s, 1], "model": MODEL}),
    "input-an-object": lambda s: js({"input": {s: s}, "model": MODEL}),
    "input-token-ids": lambda s: js({"input": [1] * len(s), "model": MODEL}),
    "encoding_format": lambda s: js({"input": "a", "model": MODEL, "encoding_format": s}),
    "dimensions": lambda s: js({"input": "a", "model": MODEL, "dimensions": s}),
    "dimensions-digits": lambda s: js({"input": "a", "model": MODEL, "dimensions": "7" * len(s)}),
    "user": lambda s: js({"input": "a", "model": MODEL, "user": [s]}),
    "normalize": lambda s: js({"input": "a", "model": MODEL, "normalize": s}),
    "deep-input": lambda s: b'{"model": "gru_encoder", "input": ' + b"[" * len(s) + b'"a"' + b"]" * len(s) + b"}",
    "body-a-string": lambda s: js(s),
    "not-json": lambda s: b'{"input": "' + s.encode("utf-8", "surrogatepass"),
}
# Any characters, lone surrogates and controls included (what JSON escapes the most), repeated to a length.
UNIT = st.text(st.characters(), min_size=1, max_size=3)
LENGTH = st.integers(QUOTE_CHARS + 1, 30_000)


def answers(make: Callable[[str], bytes], error_of: Callable[[bytes], ErrorBody | None], unit: str, n: int):
    """The error for the body with a string of n characters in its hole, and for one 10 times longer."""
    return [error_of(make((unit * (m // len(unit) + 1))[:m])) for m in (n, 10 * n)]


def check_bounded(small: ErrorBody | None, large: ErrorBody | None) -> None:
    for error in (small, large):
        if error is not None:
            assert 400 <= error.code < 500 and error.type in ERRORS, error
            assert max(sizes(error)) <= MAX_ERROR_BYTES, (sizes(error), error)
    if small is not None and large is not None and small.type == large.type:
        target(float(max(sizes(large))), label="bytes of the error")
        # 10 times the input: the same error, longer only by the digits of the sizes it states.
        growth = [b - a for a, b in zip(sizes(small), sizes(large))]
        assert max(growth) <= 16, (growth, small, large)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(sorted(NATIVE)), UNIT, LENGTH)
def test_no_native_error_grows_with_the_request(service: EncoderService, position: str, unit: str, n: int) -> None:
    check_bounded(*answers(NATIVE[position], lambda body: native_error(service, body), unit, n))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(OPENAI)), UNIT, LENGTH)
def test_no_openai_error_grows_with_the_request(position: str, unit: str, n: int) -> None:
    check_bounded(*answers(OPENAI[position], openai_answer, unit, n))


@settings(max_examples=200, deadline=None)
@given(st.integers(400, 599), st.text(st.characters(), max_size=40), st.text(st.characters(), max_size=40),
       st.none() | st.text(st.characters(), max_size=40), st.integers(1, 100_000))
def test_any_error_body_is_bounded_in_both_dialects(code: int, type_: str, message: str, field: str | None, times: int) -> None:
    error = ErrorBody(code, type_ * times, message * times, None if field is None else field * times)
    assert max(sizes(error)) <= MAX_ERROR_BYTES, sizes(error)
    assert ErrorBody.parse(error.to_json()) == error
    json.loads(openai_error(error))


def test_a_long_list_of_token_ids_is_refused_at_its_first_item() -> None:
    """The OpenAI route's `input` stops at its first bad item: 3 million ids are one error, not 3 million."""
    body = json.dumps({"input": [1] * 3_000_000, "model": "gru_encoder"}).encode()
    start = time.perf_counter()
    with pytest.raises(RequestError) as refused:
        parse_embeddings_request(body, "gru_encoder", 256)
    assert time.perf_counter() - start < 1.0
    assert refused.value.error.code == 422 and refused.value.error.field == "input[0]"
