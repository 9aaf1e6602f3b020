"""A small typed client for the served encoder (requests-based): timeouts, retries on 503, numpy out.

JSON by default; `EncoderClient(url, format="npz")` asks for the binary .npz response (Accept header):
smaller, no float parsing, the server's exact float32 bits. Needs requests and numpy only (the `client`
extra): neither torch nor pydantic is imported.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import requests

from gru_encoder.contract import JSON_TYPE, NPZ_TYPE, Encoded, ErrorBody

__all__ = ["Encoded", "EncoderClient", "EncoderError"]


class EncoderError(RuntimeError):
    """The server answered with an error body (contract.ErrorBody; None when the body was not one)."""

    def __init__(self, status: int, error: ErrorBody | None, text: str):
        self.status, self.error = status, error
        super().__init__(f"HTTP {status}: {error.type + ': ' + error.message if error else text[:300]}")


class EncoderClient:
    """`EncoderClient("http://127.0.0.1:8080").encode(["i am cold ."])`; format="npz" for binary responses."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        model: str = "gru_encoder",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        session: requests.Session | None = None,
        format: str = "json",
    ):
        if format not in ("json", "npz"):
            raise ValueError(f'format={format!r}: use "json" or "npz"')
        self.format = format
        self.url = f"{base_url.rstrip('/')}/predictions/{model}"
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.session = session or requests.Session()

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
        in chunks, send every chunk but the last with add_eos=False (see docs/API.md)."""
        payload: dict = {"texts": [texts] if isinstance(texts, str) else list(texts), "return": list(return_)}
        if h0 is not None:
            payload["h0"] = np.asarray(h0, dtype=np.float32).tolist()
        if truncate:
            payload["truncate"] = True
        if not add_eos:
            payload["add_eos"] = False
        if self.format == "npz":
            return Encoded.from_npz(self.post(payload, accept=NPZ_TYPE).content)
        return Encoded.from_json(self.post_json(payload))

    def post_json(self, payload: dict) -> dict:
        """POST a request body and parse the JSON answer (see post)."""
        return self.post(payload).json()

    def post(self, payload: dict, accept: str = JSON_TYPE) -> requests.Response:
        """POST a request body; retries 503 (server busy or restarting) with exponential backoff; raises
        EncoderError for any other non-200 answer."""
        for attempt in range(self.retries + 1):
            resp = self.session.post(self.url, json=payload, timeout=self.timeout, headers={"Accept": accept})
            if resp.status_code != 503 or attempt == self.retries:
                break
            time.sleep(self.backoff * 2**attempt)
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
