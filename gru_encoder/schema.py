"""The JSON contract of POST /predictions/gru_encoder: request, response, errors and limits.

One definition used by the handler, the client, the OpenAPI document and the tests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TensorName = Literal["output", "hidden"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]


class Limits(BaseModel):
    """Per-request limits; set in the archive's model-config.yaml under `gru_encoder:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_texts: int = Field(64, ge=1, description="most texts in one request")
    max_text_chars: int = Field(10_000, ge=1, description="most characters in one text (checked before tokenizing)")
    max_response_bytes: int = Field(
        6_553_500, ge=1024, description="largest response body; keep equal to TorchServe's max_response_size"
    )


def _also_a_bare_string(schema: dict[str, Any]) -> None:
    """`texts` also takes a bare string (see the validator): say so in the JSON schema / OpenAPI."""
    array = {key: schema.pop(key) for key in ("type", "items", "minItems")}
    schema["anyOf"] = [array, {"type": "string"}]


class EncodeRequest(BaseModel):
    """Texts to encode. A bare JSON string for `texts` is one text."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    texts: list[Annotated[str, Field(strict=True)]] = Field(
        ...,
        min_length=1,
        description="texts to encode (a bare string is one text); each is tokenized with <eos> appended",
        json_schema_extra=lambda schema: _also_a_bare_string(schema),
    )
    return_: list[TensorName] = Field(
        default=["output", "hidden"], alias="return", min_length=1, description="which tensors to return"
    )
    h0: list[list[list[FiniteFloat]]] | None = Field(
        default=None, description="initial hidden state (num_layers*D, B, H), e.g. a previous response's `hidden`"
    )
    truncate: bool = Field(
        default=False, strict=True, description="drop tokens past the model's max_length instead of answering 413"
    )
    add_eos: bool = Field(
        default=True,
        strict=True,
        description="append <eos> to each text, as in training; false for all but the last chunk of a text "
        "fed in pieces through h0",
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _bare_string_is_one_text(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ModelInfo(BaseModel):
    name: str
    version: str
    weights_sha256: str


class EncodeResponse(BaseModel):
    """Tensors for B texts padded to T = this request's longest tokenized text (with <eos>)."""

    model: ModelInfo
    tokens: list[list[str]] = Field(description="normalized tokens per text, ending with <eos>; unknown words keep their text")
    ids: list[list[int]] = Field(description="(B, T) token ids, padded with 0")
    lengths: list[int] = Field(description="(B,) tokens per text, <eos> included")
    truncated: list[bool] = Field(description="(B,) whether a text was cut to max_length")
    output: list[list[list[float]]] | None = Field(None, description="(B, T, D*H) GRU output; padded positions are 0.0")
    hidden: list[list[list[float]]] | None = Field(None, description="(num_layers*D, B, H) final hidden state")
    shapes: dict[str, list[int]] = Field(description="shape of ids, lengths and each returned tensor")


ErrorType = Literal[
    "invalid_json",  # 400: body is not JSON or not UTF-8
    "unsupported_media_type",  # 415: a form or multipart body (TorchServe splits those into fields)
    "validation_error",  # 422: a field is missing, of the wrong type or value, or h0 has the wrong shape
    "too_many_texts",  # 413
    "input_too_long",  # 413: a text over max_text_chars, or over max_length tokens without truncate
    "response_too_large",  # 413: ask for fewer texts or only "hidden"
    "internal_error",  # 500: a bug; the request is logged
    # Answered by the gateway in front of TorchServe (docker/gateway), never by the handler:
    "unauthorized",  # 401: missing or unknown API key
    "not_found",  # 404: a route the gateway does not expose
    "method_not_allowed",  # 405
    "request_too_large",  # 413: body over the gateway's client_max_body_size
    "rate_limited",  # 429: over this API key's request rate; retry after a pause
    "overloaded",  # 503: TorchServe's job queue is full; retry with backoff
    "unavailable",  # 502/504: the model server is down, restarting or timed out
]


class ErrorResponse(BaseModel):
    """Every error: HTTP status in `code`, a stable `type`, and a message naming the field and limit."""

    code: int
    type: ErrorType
    message: str
    field: str | None = None


class RequestError(Exception):
    """A client error for one request; becomes an ErrorResponse with its HTTP status."""

    def __init__(self, code: int, type_: ErrorType, message: str, field: str | None = None):
        super().__init__(message)
        self.error = ErrorResponse(code=code, type=type_, message=message, field=field)
