"""The OpenAI embeddings dialect (POST /v1/embeddings) on top of the native encode path.

A request `{"input": str | [str], "model": "gru_encoder", "encoding_format": "float" | "base64",
"dimensions"?: int, "user"?: str}` becomes a native request for the final hidden state only; the
answer is OpenAI's list of embeddings. A text's embedding is the last layer's final hidden state,
both directions concatenated when the GRU is bidirectional: the native route's `hidden[-1]` for the
shipped one-direction model, shape (D*H,).

Not L2-normalized by default: the vector then equals what the native route returns (within float32
rounding of the batch), so both routes can be mixed, and cosine similarity, the usual use, divides by
the norms anyway. `"normalize": true` (an extension; `extra_body` in the openai package) returns unit
vectors, for stores that rank by dot product.

Errors keep their HTTP status and are written in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`: `code` is the project's error type (contract.ERRORS),
`param` the request field (`input[3]` for the native `texts[3]`).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Annotated, Any, Callable, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gru_encoder.api.contract import Encoded, ErrorBody, RequestError, quote
from gru_encoder.api.schema import EncodeRequest, Limits

ROUTE = "embeddings"


def error_kind(status: int) -> str:
    """OpenAI's error `type` for an HTTP status (its API uses these four for the statuses we send)."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_param(field: str | None) -> str | None:
    """The native field name in the OpenAI request: texts -> input, texts[3] -> input[3]."""
    if field is None:
        return None
    return "input" + field[len("texts"):] if field.startswith("texts") else field


def openai_error(error: ErrorBody) -> bytes:
    """The project's error in OpenAI's shape, same status; the native field names become OpenAI's."""
    message = re.sub(r"\btexts(?=[\[:])", "input", error.message)
    body = {"error": {"message": message, "type": error_kind(error.code), "param": openai_param(error.field),
                      "code": error.type}}
    return json.dumps(body, separators=(",", ":")).encode()


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request; token-id inputs are refused (this model has its own tokenizer)."""

    model_config = ConfigDict(extra="forbid")

    # fail_fast: a list stops at its first bad item (3 million ints made 3 million errors and 11 s of a worker's CPU).
    input: str | Annotated[list[Annotated[str, Field(strict=True)]], Field(fail_fast=True)] = Field(..., description="a text or a list of texts")
    model: str = Field(..., description="the served model's name")
    encoding_format: Literal["float", "base64"] = Field("float", description="a list of floats, or base64 of little-endian float32")
    dimensions: int | None = Field(None, description="the embedding's size; only the model's own size is accepted")
    user: str | None = Field(None, description="accepted and ignored")
    normalize: bool = Field(False, strict=True, description="extension: L2-normalize each embedding")


def sentence_embeddings(hidden: np.ndarray, num_directions: int) -> np.ndarray:
    """(L*D, B, H) final hidden states -> (B, D*H): the last layer, its directions side by side."""
    last = hidden[-num_directions:]  # (D, B, H): forward then backward, as nn.GRU stacks them
    return np.ascontiguousarray(np.concatenate(list(last), axis=-1), dtype=np.float32)


def parse_embeddings_request(body: Any, model_name: str, dim: int, version: str | None = None) -> EmbeddingsRequest:
    """Raw body -> a validated request, or RequestError naming the OpenAI field. `model` is the model's name,
    or `<name>@<version>` of the version answering (GET /v1/models lists one id per served version: the
    gateway sends such a request to that version's workers). Another version's id (a body the gateway could
    not route: over its in-memory body buffer, or TorchServe called directly) is refused saying how to pin
    it: a 422, as for any model not served here (behind the gateway a handler's 404 would read as TorchServe's
    "not loaded yet")."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as e:
            raise RequestError("invalid_json", f"request body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise RequestError("validation_error", 'request body must be a JSON object like {"input": "i am cold .", "model": "%s"}' % model_name, "body")
    try:
        request = EmbeddingsRequest.model_validate(body)
    except ValidationError as e:
        # A union reports one error per branch: the deepest names the element (input[1], not input).
        err = max(e.errors(include_url=False), key=lambda err: len(err["loc"]))
        loc = [p for p in err["loc"] if p not in ("str", "list[str]", "list[str-strict]")]  # drop pydantic's union branch names
        field = "".join(f"[{p}]" if isinstance(p, int) else (f".{quote(p, bare=True)}" if i else quote(p, bare=True))
                        for i, p in enumerate(loc)) or "body"
        hint = " (token ids are not accepted: send the text)" if field.startswith("input") and err["type"] == "string_type" else ""
        raise RequestError("validation_error", f"{field}: {err['msg']}{hint}", field)
    pinned = request.model.partition("@")[2] if request.model.startswith(model_name + "@") else None
    if pinned and pinned != version:
        raise RequestError("validation_error", f"model {quote(request.model)}: this route answers with the default version "
                           f"({version}) only; for version {quote(pinned)} send its texts to POST /predictions/{model_name}/"
                           f"{quote(pinned, bare=True)} (the native route, pinned; hidden[-1] is the embedding)", "model")
    if request.model != model_name and not pinned:
        raise RequestError("validation_error", f"model {quote(request.model)} is not served here: use {model_name!r}", "model")
    if request.dimensions is not None and request.dimensions != dim:
        raise RequestError("validation_error", f"dimensions={quote(request.dimensions)}: this model's embeddings have {dim} "
                           "(a GRU state cannot be shortened meaningfully); leave it out", "dimensions")
    if isinstance(request.input, list) and not request.input:
        raise RequestError("validation_error", "input: send at least one text", "input")
    return request


def encode_request(request: EmbeddingsRequest, limits: Limits) -> EncodeRequest:
    """The native request that computes the embeddings (the final hidden state only), built from the
    validated OpenAI request without validating it again; the native limits on the number and the
    length of texts apply, named by OpenAI's field (input, input[3])."""
    texts = [request.input] if isinstance(request.input, str) else list(request.input)
    if len(texts) > limits.max_texts:
        raise RequestError("too_many_texts", f"{len(texts)} texts, more than the limit of {limits.max_texts}; split the request", "input")
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise RequestError("input_too_long", f"input[{i}] has {len(text)} characters, more than the limit of "
                               f"{limits.max_text_chars}", f"input[{i}]")
    return EncodeRequest.model_construct(texts=texts, return_=["hidden"])


def response_writer(request: EmbeddingsRequest, model_name: str, num_directions: int) -> Callable[[Encoded], bytes]:
    """Encoded (hidden only) -> OpenAI's embeddings response body."""

    def write(result: Encoded) -> bytes:
        vectors = sentence_embeddings(result.hidden, num_directions)  # (B, D*H)
        if request.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
        if request.encoding_format == "base64":
            items = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            items = list(vectors)  # orjson writes float32 as shortest round-trip decimals
        tokens = int(result.lengths.sum())
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)],
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    return write
