"""The work budget of one request (docs/API.md, "Limits"): NFKC can make a text 18 times longer, so the
characters normalization produces and the tokens a request holds are bounded, text by text, before the
costlier steps run; with truncate a text is first cut; an answer that cannot fit is refused before the
forward pass. Over a limit is a 413 naming it."""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from gru_encoder.core.artifacts import LoadedEncoder, load_encoder
from gru_encoder.api.contract import ERROR_STATUS
from gru_encoder.api.schema import Limits
from gru_encoder.api.service import EncoderService
from gru_encoder.host.settings import ServingSettings
from gru_encoder.core.tokenizer import NormalizedTooLongError, Tokenizer, TokenizerConfig, normalize

LIMITS = Limits()
FDFA = "\ufdfa"  # ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM: 18 characters under NFKC
# Characters that cost the most per character sent: NFKC expanders, CJK and Hangul (a token each,
# Hangul decomposed and recomposed by accent folding), accents, punctuation, spaces.
EXPENSIVE = [FDFA, "\u3390", "\ufb03", "\u2474", "\u4e00", "\uac00", "\u0301", "\u00e9", "!", " ", "a", "\u00df"]


@pytest.fixture(scope="module")
def loaded(smoke_run: Path) -> LoadedEncoder:
    return load_encoder(smoke_run)


@pytest.fixture(scope="module")
def service(loaded: LoadedEncoder) -> EncoderService:
    return EncoderService(loaded, LIMITS)


def answer(service: EncoderService, body: dict) -> tuple[int, dict]:
    [(status, raw)] = service.handle([json.dumps(body).encode()])
    return status, orjson.loads(raw)


def test_the_limits_are_serving_settings_with_the_same_defaults() -> None:
    settings = ServingSettings()
    assert settings.limits() == LIMITS
    assert (settings.max_request_chars, settings.max_request_tokens, settings.truncate_chars) == (131_072, 8_192, 2_048)
    custom = ServingSettings(max_request_chars=10, max_request_tokens=20, truncate_chars=30).limits()
    assert (custom.max_request_chars, custom.max_request_tokens, custom.truncate_chars) == (10, 20, 30)


def test_normalize_stops_right_after_nfkc_when_over_max_chars() -> None:
    assert len(unicodedata.normalize("NFKC", FDFA * 100)) == 1800
    with pytest.raises(NormalizedTooLongError, match="1800 characters after Unicode normalization") as err:
        normalize(FDFA * 100, max_chars=1799)
    assert (err.value.n_chars, err.value.max_chars) == (1800, 1799)
    assert normalize(FDFA * 100, max_chars=1800) == normalize(FDFA * 100)


def test_cut_chars_cuts_before_normalizing_and_flags_the_text_truncated() -> None:
    tok = Tokenizer.build(["i am cold ."], TokenizerConfig(max_length=16))
    enc = tok.encode("i am cold . " + FDFA * 1000, truncate=True, cut_chars=12)
    assert enc.tokens == ["i", "am", "cold", ".", "<eos>"] and enc.truncated and enc.n_chars == 12
    short = tok.encode("i am cold .", truncate=True, cut_chars=12)
    assert not short.truncated and short == tok.encode("i am cold .", truncate=True)
    # Without truncate there is no cut: the text is too long or it fits whole.
    assert tok.encode("i am " * 3, truncate=False, cut_chars=4).tokens == ["i", "am", "i", "am", "i", "am", "<eos>"]


@pytest.mark.parametrize("truncate", [True, False])
def test_the_amplification_request_is_a_fast_413_naming_the_limit(service: EncoderService, truncate: bool) -> None:
    """64 texts x 10,000 x U+FDFA (1.9 MB of UTF-8): once 3.6 s of a worker with truncate, now a 413
    after at most max_request_chars characters of normalization."""
    status, body = answer(service, {"texts": [FDFA * 10_000] * 64, "truncate": truncate, "return": ["hidden"]})
    assert status == 413 == ERROR_STATUS["request_too_long"] and body["type"] == "request_too_long", body
    assert "max_request_chars" in body["message"] and str(LIMITS.max_request_chars) in body["message"]
    # With truncate each text is cut to 2,048 characters first (36,864 after NFKC): the fourth passes the budget.
    assert body["field"] == ("texts[3]" if truncate else "texts[0]"), body


def test_a_request_within_the_character_budget_is_served(service: EncoderService) -> None:
    per_text = LIMITS.max_request_chars // 64
    status, body = answer(service, {"texts": ["\u4e00" * per_text] * 64, "truncate": True, "return": ["hidden"]})
    assert status == 200 and all(body["truncated"]), body.get("message")
    status, body = answer(service, {"texts": ["\u4e00" * per_text] * 63 + ["\u4e00" * (per_text + 1)], "return": ["hidden"],
                                    "truncate": False})
    assert status == 413 and body["type"] == "input_too_long", body  # tokens over max_length come first


def test_token_budget_across_texts(loaded: LoadedEncoder) -> None:
    service = EncoderService(loaded, Limits(max_request_tokens=10))
    status, body = answer(service, {"texts": ["i am cold ."] * 2})  # 5 + 5 tokens with <eos>
    assert status == 200, body
    status, body = answer(service, {"texts": ["i am cold ."] * 3})
    assert status == 413 and body["type"] == "request_too_long" and body["field"] == "texts[2]", body
    assert "15 tokens" in body["message"] and "max_request_tokens" in body["message"], body


def test_an_answer_that_cannot_fit_is_refused_before_the_forward_pass(loaded: LoadedEncoder) -> None:
    service = EncoderService(loaded, Limits(max_response_bytes=4096))
    calls = []
    service.encode = lambda batch: calls.append(batch) or pytest.fail("the forward pass ran")  # type: ignore[method-assign]
    h = service.encoder.config.hidden_size
    status, body = answer(service, {"texts": ["i am cold ."] * (4096 // (4 * h) + 1), "return": ["hidden"]})
    assert status == 413 and body["type"] == "response_too_large" and "floats" in body["message"], body
    assert not calls


def test_the_limits_are_in_the_openapi_document() -> None:
    from gru_encoder.api.openapi import openapi_document

    doc = json.dumps(openapi_document())
    for value in (LIMITS.max_request_chars, LIMITS.max_request_tokens, LIMITS.truncate_chars):
        assert str(value) in doc


REPEATED = st.tuples(st.lists(st.sampled_from(EXPENSIVE), min_size=1, max_size=6).map("".join), st.integers(1, LIMITS.max_text_chars))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(REPEATED, min_size=1, max_size=LIMITS.max_texts), st.booleans())
def test_no_request_costs_more_than_its_budget(service: EncoderService, parts: list, truncate: bool) -> None:
    """hypothesis searches (target: the CPU time of the whole request) for the most expensive request of
    the characters that cost the most; every answer is 200 or a 4xx, an accepted request holds at most
    the budget, and none costs more than 1 s of CPU (a request cost up to 3.6 s before the budget; the
    bench figure is in docs/RELIABILITY.md)."""
    texts = [(unit * (n // len(unit) + 1))[:n] for unit, n in parts]
    body = {"texts": texts, "truncate": truncate, "return": ["hidden"]}
    start = time.thread_time()
    status, reply = answer(service, body)
    cost = time.thread_time() - start
    target(cost, label="CPU seconds of one request")
    assert status == 200 or 400 <= status < 500, reply
    if status == 200:
        tok = service.tokenizer
        cut = LIMITS.truncate_chars if truncate else None
        encs = [tok.encode(t, truncate=truncate, cut_chars=cut) for t in texts]
        assert sum(e.n_chars for e in encs) <= LIMITS.max_request_chars
        assert sum(len(e.ids) for e in encs) <= LIMITS.max_request_tokens
    assert cost < 1.0, f"{cost:.2f} s of CPU for {[(u, n) for u, n in parts][:3]}..."
