"""Property tests (hypothesis): the tokenizer and the request path never crash and keep their invariants."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.api.schema import Limits
from gru_encoder.api.service import EncoderService
from gru_encoder.core.tokenizer import EOS, EOS_ID, InputTooLongError, Tokenizer, TokenizerConfig, normalize

TOK = Tokenizer.build(["i am cold .", "he is tall", "café crème", "我爱你", "don't stop !"], TokenizerConfig(max_length=16))
# Any Unicode text, surrogates excluded (they cannot reach us: JSON bodies are UTF-8 checked first).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


@given(TEXT, st.booleans())
def test_encode_never_crashes_and_keeps_its_invariants(text: str, add_eos: bool) -> None:
    enc = TOK.encode(text, truncate=True, add_eos=add_eos)
    assert len(enc.ids) == len(enc.tokens) <= TOK.config.max_length
    assert all(0 <= i < len(TOK) for i in enc.ids)
    assert all(TOK.stoi.get(t, 3) == i for t, i in zip(enc.tokens, enc.ids))
    assert (enc.tokens[-1:] == [EOS] and enc.ids[-1] == EOS_ID) if add_eos else EOS_ID not in enc.ids
    assert enc.truncated == (enc.n_words > len(enc.ids) - add_eos)
    assert TOK.encode(text, truncate=True, add_eos=add_eos) == enc  # deterministic


@given(TEXT)
def test_truncate_false_either_fits_or_says_how_long(text: str) -> None:
    try:
        enc = TOK.encode(text, truncate=False)
        assert not enc.truncated
    except InputTooLongError as e:
        assert e.n_tokens > TOK.config.max_length == e.max_length


@given(TEXT)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
# Bodies shaped like requests, with every field free to be wrong.
REQUEST = st.fixed_dictionaries(
    {"texts": st.one_of(TEXT, st.lists(TEXT, max_size=5), JSON)},
    optional={
        "return": st.one_of(st.lists(st.sampled_from(["output", "hidden", "all"]), max_size=3), JSON),
        "h0": st.one_of(st.lists(st.lists(st.lists(st.floats(width=32), max_size=9), max_size=3), max_size=2), JSON),
        "truncate": st.one_of(st.booleans(), JSON),
        "add_eos": st.one_of(st.booleans(), JSON),
    },
)


@pytest.fixture(scope="module")
def service(smoke_run: Path) -> EncoderService:
    return EncoderService(load_encoder(smoke_run), Limits(max_texts=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(REQUEST, JSON, st.binary(max_size=64)), min_size=1, max_size=4))
def test_any_server_batch_gets_one_json_answer_per_request_and_never_a_5xx(service: EncoderService, bodies: list) -> None:
    # As TorchServe hands them over: raw bytes, or what Python's json made of a JSON body.
    raw = [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]
    for parsed in (raw, [b if isinstance(b, bytes) else json.loads(r) for b, r in zip(bodies, raw)]):
        replies = service.handle(parsed)
        assert len(replies) == len(bodies)
        for status, body in replies:
            answer = orjson.loads(body)
            assert status == 200 or (400 <= status < 500 and answer["code"] == status and answer["message"]), answer
            if status == 200:
                assert answer["shapes"]["ids"][0] == len(answer["lengths"]) == len(answer["tokens"])
                assert all(n == len(t) for n, t in zip(answer["lengths"], answer["tokens"]))
                for row, n in zip(answer["ids"], answer["lengths"]):  # ids in range, padding after each length
                    assert len(row) == answer["shapes"]["ids"][1] and all(0 < i < len(service.tokenizer) for i in row[:n])
                    assert not any(row[n:])
