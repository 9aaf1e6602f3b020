"""A small typed client for the served encoder (requests-based), for TorchServe directly or its gateway.

    client = EncoderClient("http://127.0.0.1:8080", api_key="...")   # the key: only behind the gateway
    enc = client.encode(["i am cold ."])                              # numpy arrays out

Retries (urllib3's Retry, on the session's adapter): 429 (the gateway's rate limit; its Retry-After
is honoured), 502/503/504 (TorchServe restarting, queue full, timed out) and connection errors, with
exponential backoff and random jitter, so that clients turned away together do not come back together.
Encoding is idempotent, so a retried POST does no harm. More texts than the server takes in one request
(max_texts, from its /info) are sent as several requests and the answers put back together.

`EncoderClient(url, version="2.0")` pins a version of the model: it posts to /predictions/gru_encoder/2.0,
so the vectors keep coming from the model that built your stored ones when the default changes (a version
that is not served is a 404 not_found); every answer says which version produced it (`enc.model["version"]`,
`client.last_version`).

JSON by default; `EncoderClient(url, format="npz")` asks for the binary .npz response (Accept header):
smaller, no float parsing, the server's exact float32 bits. Needs requests and numpy only (the `client`
extra): neither torch nor pydantic is imported.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from gru_encoder.api.contract import JSON_TYPE, NPZ_TYPE, ROUTE_HEADER, Encoded, ErrorBody
from gru_encoder.api.limits import DEFAULT_LIMITS
from gru_encoder.api.routes import CALLER_HEADER, CALLER_ID_PATTERN, MODEL_NAME, NATIVE_PATH, PINNED_PATH, VERSION_PATTERN, path_of

__all__ = ["Encoded", "EncoderClient", "EncoderError"]
RETRY_STATUSES = (429, 502, 503, 504)


class EncoderError(RuntimeError):
    """The server answered with an error body (contract.ErrorBody; None when the body was not one)."""

    def __init__(self, status: int, error: ErrorBody | None, text: str):
        self.status, self.error = status, error
        super().__init__(f"HTTP {status}: {error.type + ': ' + error.message if error else text[:300]}")


def retry_policy(retries: int, backoff: float, backoff_max: float) -> Retry:
    """urllib3's Retry for the encoder: RETRY_STATUSES and connection errors, on POST too."""
    return Retry(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET", "POST"}),
        backoff_factor=backoff, backoff_max=backoff_max, backoff_jitter=backoff,
        respect_retry_after_header=True,  # 429 and 503 with Retry-After wait that long
        raise_on_status=False,  # the last answer comes back, and raises EncoderError with its body
    )


def concat(parts: list[Encoded]) -> Encoded:
    """The answers to consecutive slices of one request's texts, as the one answer (padded to the longest T)."""
    if len(parts) == 1:
        return parts[0]
    t = max(p.ids.shape[1] for p in parts)

    def pad(a: np.ndarray) -> np.ndarray:  # (B, T_part, ...) -> (B, t, ...), zeros past each text's end
        return np.pad(a, [(0, 0), (0, t - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

    return Encoded(
        model=parts[0].model,
        tokens=[row for p in parts for row in p.tokens],
        ids=np.concatenate([pad(p.ids) for p in parts]),
        lengths=np.concatenate([p.lengths for p in parts]),
        truncated=[x for p in parts for x in p.truncated],
        output=np.concatenate([pad(p.output) for p in parts]) if parts[0].output is not None else None,
        hidden=np.concatenate([p.hidden for p in parts], axis=1) if parts[0].hidden is not None else None,
    )


class EncoderClient:
    """`EncoderClient("http://127.0.0.1:8080", api_key=...).encode(["i am cold ."])`; format="npz" for binary responses."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        model: str = "gru_encoder",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
        backoff_max: float = 10.0,
        session: requests.Session | None = None,
        format: str = "json",
        max_texts: int | None = None,
        version: str | None = None,
        caller_id: str | None = None,
    ):
        """retries: how many times one request is retried; backoff: the first pause (s), doubled each
        retry up to backoff_max, plus up to `backoff` of jitter. max_texts: texts per request; None
        asks the server (/info) the first time a call has more than one text. version: the served version to
        pin (GET /info lists them); None: the server's default, which may change under you. caller_id: sent as
        X-Caller-ID, which keeps this caller on one side of a canary where the gateway has no API keys (else
        the key decides; docs/VERSIONS.md)."""
        if format not in ("json", "npz"):
            raise ValueError(f'format={format!r}: use "json" or "npz"')
        if max_texts is not None and max_texts < 1:
            raise ValueError(f"max_texts={max_texts}: at least 1, or None to ask the server")
        self.format = format
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}{NATIVE_PATH.replace(MODEL_NAME, model)}"
        if version is not None:
            if not re.fullmatch(VERSION_PATTERN, version):
                raise ValueError(f"version={version!r}: 1-32 of A-Z a-z 0-9 . _ -, starting with a letter or digit (GET /info lists them)")
            self.url = f"{self.base_url}{PINNED_PATH.replace(MODEL_NAME, model).replace('{version}', version)}"
        self.version = version
        self.last_version: str | None = None  # the version that produced the last answer
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_texts = max_texts
        self.session = session or requests.Session()
        adapter = HTTPAdapter(max_retries=retry_policy(retries, backoff, backoff_max))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if api_key is not None:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        if caller_id is not None:
            if not re.fullmatch(CALLER_ID_PATTERN, caller_id):
                raise ValueError(f"caller_id={caller_id[:40]!r}: 1-128 of A-Z a-z 0-9 . _ : -")
            self.session.headers[CALLER_HEADER] = caller_id

    def info(self) -> dict[str, Any]:
        """The server's model and limits: GET /info at the gateway, else the route header on TorchServe."""
        resp = self.session.get(self.base_url + path_of("info"), timeout=self.timeout)
        if resp.status_code == 404:  # TorchServe itself has no /info path
            resp = self.session.post(self.url, data=b"{}", headers={ROUTE_HEADER: "info"}, timeout=self.timeout)
        if resp.status_code != 200:
            raise EncoderError(resp.status_code, ErrorBody.parse(resp.content), resp.text)
        return resp.json()

    def _max_texts(self) -> int:
        if self.max_texts is None:
            try:
                self.max_texts = int(self.info()["limits"]["max_texts"])
            except (EncoderError, requests.RequestException, KeyError, ValueError, TypeError):
                self.max_texts = DEFAULT_LIMITS["max_texts"]  # an older server: the default limit
        return self.max_texts

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        return_: Sequence[str] = ("output", "hidden"),
        h0: np.ndarray | None = None,
        truncate: bool = False,
        add_eos: bool = True,
    ) -> Encoded:
        """Encode texts; h0 is (L*D, B, H), e.g. the `hidden` of an earlier call. To feed a long text
        in chunks, send every chunk but the last with add_eos=False (see docs/API.md). More texts than
        the server's max_texts go as several requests, answered as one: unpinned, every request after the first
        is pinned to the version that answered the first, so that a default changed meanwhile never mixes two
        versions' vectors in one answer."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        h0 = None if h0 is None else np.asarray(h0, dtype=np.float32)  # (L*D, B, H)
        step = self._max_texts() if len(texts) > 1 else 1
        parts: list[Encoded] = []
        url = self.url
        for i in range(0, max(len(texts), 1), step):
            parts.append(self._encode(texts[i:i + step], return_, None if h0 is None else h0[:, i:i + step], truncate, add_eos, url))
            if self.version is None and self.last_version and re.fullmatch(VERSION_PATTERN, self.last_version):
                url = f"{self.base_url}{PINNED_PATH.replace(MODEL_NAME, self.model).replace('{version}', self.last_version)}"
        return concat(parts)

    def _encode(self, texts: list[str], return_: Sequence[str], h0: np.ndarray | None, truncate: bool,
                add_eos: bool, url: str | None = None) -> Encoded:
        payload: dict = {"texts": texts, "return": list(return_)}
        if h0 is not None:
            payload["h0"] = h0.tolist()
        if truncate:
            payload["truncate"] = True
        if not add_eos:
            payload["add_eos"] = False
        if self.format == "npz":
            result = Encoded.from_npz(self.post(payload, accept=NPZ_TYPE, url=url).content)
        else:
            result = Encoded.from_json(self.post(payload, url=url).json())
        self.last_version = str(result.model.get("version")) if isinstance(result.model, dict) else None
        return result

    def post_json(self, payload: dict) -> dict:
        """POST a request body and parse the JSON answer (see post)."""
        return self.post(payload).json()

    def post(self, payload: dict, accept: str = JSON_TYPE, url: str | None = None) -> requests.Response:
        """POST a request body (retried as the class says); raises EncoderError for a non-200 answer."""
        resp = self.session.post(url or self.url, json=payload, timeout=self.timeout, headers={"Accept": accept})
        if resp.status_code != 200:
            raise EncoderError(resp.status_code, ErrorBody.parse(resp.content), resp.text)
        return resp

    def healthy(self) -> bool:
        """True when the model answers a real request (TorchServe's /ping stays healthy while a worker crash-loops)."""
        try:
            self.post_json({"texts": ["ping"], "return": ["hidden"]})
            return True
        except (requests.RequestException, EncoderError):
            return False
