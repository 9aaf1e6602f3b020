"""The response and error contract of POST /predictions/gru_encoder, defined once.

The server's JSON and .npz writers, the client, the load tools' checks, the OpenAPI document and the
tests all use what is here. numpy and the standard library only, so that the client installs without
torch or pydantic (the request side, which the server validates with pydantic, is in schema.py).
"""

from __future__ import annotations

import io
import json
import reprlib
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Literal, get_args

import numpy as np

from gru_encoder.api import npz

TensorName = Literal["output", "hidden"]
TENSORS: tuple[str, ...] = get_args(TensorName)
JSON_TYPE = "application/json"
NPZ_TYPE = "application/x-npz"  # numpy's .npz: np.load(io.BytesIO(body)); asked for with the Accept header
# TorchServe routes only POST /predictions/{model}: the other routes (OpenAI's /v1/embeddings and
# /v1/models, /info) reach the handler with this header naming them (the gateway sets it from the path).
ROUTE_HEADER = "X-Gru-Encoder-Route"
REQUEST_ID_HEADER = "X-Request-ID"  # made or kept by the gateway; the handler logs it with every error

ErrorType = Literal[
    "invalid_json",
    "unsupported_media_type",
    "validation_error",
    "too_many_texts",
    "input_too_long",
    "response_too_large",
    "request_too_long",
    "internal_error",
    # Answered by the gateway in front of TorchServe (docker/gateway), never by the handler:
    "bad_request",
    "header_too_large",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "request_too_large",
    "rate_limited",
    "overloaded",
    "unavailable",
]

# The one error type -> HTTP status map (the handler, the gateway's template and the OpenAPI document
# are checked against it). What each means, for docs/API.md and the OpenAPI document:
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not JSON or not UTF-8"),
    "unsupported_media_type": (415, "a form or multipart body (TorchServe splits those into fields); send JSON (the gateway: any type but application/json)"),
    "validation_error": (422, "a field is missing, of the wrong type or value, or h0 has the wrong shape"),
    "too_many_texts": (413, "more texts than the server's max_texts; split the request"),
    "input_too_long": (413, "a text over max_text_chars, or over max_length tokens without truncate"),
    "response_too_large": (413, "the response would pass max_response_bytes; fewer texts, or only hidden"),
    "request_too_long": (413, "the texts together pass max_request_chars after Unicode normalization, or max_request_tokens; split the request"),
    "internal_error": (500, "a bug, logged on the server; the request can be retried"),
    "bad_request": (400, "gateway: a malformed HTTP request or a query string (408: too slow, 501/505: unsupported framing or HTTP version)"),
    "header_too_large": (431, "gateway: a header over 8 KB, or too many (414: a request line over 8 KB)"),
    "unauthorized": (401, "gateway: missing or unknown API key"),
    "not_found": (404, "gateway: a route it does not expose"),
    "method_not_allowed": (405, "gateway: another method than the route's"),
    "request_too_large": (413, "gateway: body over its client_max_body_size"),
    "rate_limited": (429, "gateway: over this API key's request rate or requests in flight, or an address's on the routes without a key; retry after Retry-After"),
    "overloaded": (503, "gateway: TorchServe's job queue is full; retry with backoff"),
    "unavailable": (502, "gateway: the model server is down or restarting (504: it timed out; 503 from /health)"),
}
ERROR_STATUS: dict[str, int] = {name: status for name, (status, _) in ERRORS.items()}
# Types also sent with other statuses, by the gateway: upstream timeouts (504), /health and a model not
# loaded yet (503), TorchServe's "Worker died." (507), and the HTTP-level refusals nginx itself makes.
ALSO_SENT_AS: dict[str, tuple[int, ...]] = {"unavailable": (503, 504), "internal_error": (507,),
                                            "bad_request": (408, 501, 505), "header_too_large": (414,)}
assert set(ERRORS) == set(get_args(ErrorType)), "every error type has one status"

# Every error body, of every route and dialect (ErrorBody.to_json, openai_api.openai_error), is at most
# MAX_ERROR_BYTES, whatever the request: an error that echoed its input grew with it, and one over
# TorchServe's max_response_size lost the worker and every request batched with it. ErrorBody caps its
# message and field at construction, so no caller can build a larger one; the budgets below (bytes of
# ASCII-escaped JSON, where an emoji takes 12) leave room for either dialect's keys.
MAX_ERROR_BYTES = 4096
QUOTE_CHARS = 64  # an echoed input (a field name, a model, ...) shows this many characters, then its size
_MESSAGE_BYTES, _FIELD_BYTES, _TYPE_BYTES = 2816, 1024, 64  # a field: one quoted name of 64 emoji (800)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, QUOTE_CHARS, QUOTE_CHARS, QUOTE_CHARS


def quote(value: Any, limit: int = QUOTE_CHARS, bare: bool = False) -> str:
    """A caller's value as an error message echoes it: its repr (bare: a str as it is), cut to the first
    `limit` characters with its size stated, e.g. 'abc…' (280,000 characters). Bounded in length and
    time whatever the value: containers are read a few items and levels deep."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value if bare else repr(value)
        head = value[:limit] + "…"
        return f"{head if bare else repr(head)} ({len(value):,} characters)"
    try:
        text = _REPR.repr(value)
    except Exception:  # an int past Python's digit limit, an object whose repr fails
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[:limit] + "…"
    if isinstance(value, (list, tuple, dict)) and len(value) > _REPR.maxlist:
        text += f" ({len(value):,} items)"
    return text


def _json_len(text: str) -> int:
    """Bytes of `text` as a JSON string, quotes excluded, as json.dumps writes it (ASCII escapes)."""
    return len(json.dumps(text)) - 2


def _fit(text: str, budget: int) -> str:
    """`text` when its JSON string takes at most `budget` bytes; else its longest prefix that does with
    a note of the cut. Reads at most `budget` characters of it."""
    if len(text) <= budget and _json_len(text) <= budget:
        return text
    note = f"… (cut, {len(text):,} characters)"
    room = budget - _json_len(note)
    head = text[:room]
    end, over = len(head), _json_len(head) - room
    while over > 0:  # escapes take 2 to 12 bytes a character: drop characters from the end until it fits
        end -= 1
        over -= _json_len(head[end])
    return head[:end] + note


@dataclass(frozen=True)
class ErrorBody:
    """Every error: HTTP status in `code`, a stable `type`, and a message naming the field and limit."""

    code: int
    type: ErrorType
    message: str
    field: str | None = None

    def __post_init__(self) -> None:
        # The bound holds for any values: to_json is at most MAX_ERROR_BYTES (tests/unit/test_error_bounds.py).
        if isinstance(self.code, bool) or not isinstance(self.code, int) or not 100 <= self.code <= 599:
            raise ValueError(f"code must be an HTTP status, got {quote(self.code)}")
        object.__setattr__(self, "type", _fit(str(self.type), _TYPE_BYTES))
        object.__setattr__(self, "message", _fit(str(self.message), _MESSAGE_BYTES))
        if self.field is not None:
            name = self.field if isinstance(self.field, str) else quote(self.field, bare=True)
            object.__setattr__(self, "field", _fit(name, _FIELD_BYTES))

    def to_json(self) -> bytes:
        body = {"code": self.code, "type": self.type, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        # Compact like every other body; ASCII escapes, so a lone surrogate from a field name stays writable.
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, body: bytes | str) -> ErrorBody | None:
        """The error in a response body, or None when the body is not the project's error shape."""
        try:
            data = json.loads(body)
            return cls(int(data["code"]), data["type"], str(data["message"]), data.get("field"))
        except (ValueError, KeyError, TypeError):
            return None


class RequestError(Exception):
    """A client error for one request; its HTTP status comes from ERROR_STATUS."""

    def __init__(self, type_: ErrorType, message: str, field: str | None = None):
        self.error = ErrorBody(ERROR_STATUS[type_], type_, message, field)
        super().__init__(self.error.message)


def _meta(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "json_schema": schema}


def _floats(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@dataclass
class Encoded:
    """One request's answer: B texts padded to T = this request's longest tokenized text (with <eos>)."""

    model: dict[str, str] = field(metadata=_meta(
        "the served model: name, version and the sha256 of its weights",
        {"type": "object", "required": ["name", "version", "weights_sha256"],
         "properties": {k: {"type": "string"} for k in ("name", "version", "weights_sha256")}}))
    tokens: list[list[str]] = field(metadata=_meta(
        "normalized tokens per text, ending with <eos>; unknown words keep their text",
        {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}))
    ids: np.ndarray = field(metadata=_meta("(B, T) token ids, padded with 0", {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}))
    lengths: np.ndarray = field(metadata=_meta("(B,) tokens per text, <eos> included", {"type": "array", "items": {"type": "integer"}}))
    truncated: list[bool] = field(metadata=_meta("(B,) whether a text was cut to max_length", {"type": "array", "items": {"type": "boolean"}}))
    output: np.ndarray | None = field(default=None, metadata=_meta("(B, T, D*H) GRU output, float32; padded positions are 0.0", _floats(3)))
    hidden: np.ndarray | None = field(default=None, metadata=_meta("(num_layers*D, B, H) final hidden state, float32", _floats(3)))

    @property
    def shapes(self) -> dict[str, list[int]]:
        """Shape of ids, lengths and each returned tensor (sent in the JSON as `shapes`)."""
        shapes = {"ids": list(self.ids.shape), "lengths": list(self.lengths.shape)}
        shapes.update({name: list(getattr(self, name).shape) for name in TENSORS if getattr(self, name) is not None})
        return shapes

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON body, in the documented key order; arrays stay numpy (orjson writes them exactly)."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        body["shapes"] = self.shapes
        return body

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Encoded:
        """A parsed JSON body -> arrays shaped as its `shapes` say."""
        shapes = data["shapes"]
        return cls(
            model=data["model"],
            tokens=data["tokens"],
            ids=np.asarray(data["ids"], dtype=np.int64).reshape(shapes["ids"]),
            lengths=np.asarray(data["lengths"], dtype=np.int64),
            truncated=data["truncated"],
            **{name: np.asarray(data[name], np.float32).reshape(shapes[name]) for name in TENSORS if name in data},
        )

    def to_npz(self) -> bytes:
        """The .npz body: the same arrays at their own dtypes; tokens (B, T) str padded with "", model a
        0-d str holding its JSON object."""
        b, t = self.ids.shape
        arrays = {
            "ids": self.ids,
            "lengths": self.lengths,
            "truncated": np.asarray(self.truncated, dtype=bool),
            "tokens": np.asarray([row + [""] * (t - len(row)) for row in self.tokens], dtype=str).reshape(b, t),
            "model": np.asarray(json.dumps(self.model)),
        }
        arrays.update({name: getattr(self, name) for name in TENSORS if getattr(self, name) is not None})
        return npz.write(arrays)

    @classmethod
    def from_npz(cls, body: bytes) -> Encoded:
        z = np.load(io.BytesIO(body))  # arrays only: allow_pickle stays False
        lengths = z["lengths"]
        return cls(
            model=json.loads(z["model"].item()),
            tokens=[row[:n].tolist() for row, n in zip(z["tokens"], lengths)],
            ids=z["ids"],
            lengths=lengths,
            truncated=z["truncated"].tolist(),
            **{name: z[name] for name in TENSORS if name in z.files},
        )


def _json_shape(value: Any) -> list[int]:
    """Shape of nested JSON lists, read along their first elements (cheap enough for a load generator)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def check_response(body: Encoded | dict[str, Any], n_texts: int, wanted: Iterable[str] = TENSORS) -> str | None:
    """None when a 200 answer fits its request (n_texts texts, the tensors in `wanted`); else what is wrong.

    `body` is an Encoded (from .npz or parsed) or the raw JSON dict (checked without building arrays)."""
    wanted = set(wanted)
    if isinstance(body, Encoded):
        lengths, shapes = body.lengths.tolist(), body.shapes
        actual = {name: shapes[name] for name in TENSORS if name in shapes}
    else:
        lengths, shapes = body.get("lengths"), body.get("shapes", {})
        actual = {name: _json_shape(body[name]) for name in TENSORS if name in body}
    if lengths is None or len(lengths) != n_texts:
        return f"lengths {lengths!r} for {n_texts} texts"
    t = max(lengths)
    if shapes.get("ids") != [n_texts, t] or shapes.get("lengths") != [n_texts]:
        return f"shapes {shapes} for {n_texts} texts of at most {t} tokens"
    if set(actual) != wanted or {n for n in TENSORS if n in shapes} != wanted:
        return f"asked for {sorted(wanted)}, got {sorted(actual)} (shapes {sorted(shapes)})"
    if "output" in wanted and shapes["output"][:2] != [n_texts, t]:
        return f"output shape {shapes['output']} for {n_texts} texts of at most {t} tokens"
    if "hidden" in wanted and (len(shapes["hidden"]) != 3 or shapes["hidden"][1] != n_texts):
        return f"hidden shape {shapes['hidden']} for {n_texts} texts"
    for name in wanted:
        if actual[name] != shapes[name]:
            return f"{name} has shape {actual[name]}, shapes says {shapes[name]}"
    return None
