"""The request side of POST /predictions/gru_encoder, validated with pydantic, with its limits in the schema.

The response and error types are in contract.py (numpy only, shared with the client); this module adds
what the server and the OpenAPI document need: the request model for a given set of limits, and
pydantic's view of the error body.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, field_validator

from gru_encoder.api.contract import ErrorBody, TensorName
from gru_encoder.api.limits import DEFAULT_LIMITS

FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]
# Lists stop at their first bad item (fail_fast): a 4 MB h0 of strings made a million errors and took
# 3.7 s of the worker's CPU, where the answer names only the first three.
_H0Row = Annotated[list[FiniteFloat], Field(fail_fast=True)]  # (H,)
_H0Layer = Annotated[list[_H0Row], Field(fail_fast=True)]  # (B, H)
ERROR_BODY = TypeAdapter(ErrorBody)  # validates an error body against contract.ErrorBody; its JSON schema


class Limits(BaseModel):
    """Per-request limits, from the serving settings (GRU_ENCODER_MAX_TEXTS, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_texts: int = Field(DEFAULT_LIMITS["max_texts"], ge=1, description="most texts in one request")
    max_text_chars: int = Field(DEFAULT_LIMITS["max_text_chars"], ge=1, description="most characters in one text (checked before tokenizing)")
    max_response_bytes: int = Field(DEFAULT_LIMITS["max_response_bytes"], ge=1024, description="largest response body (TorchServe's max_response_size)")
    max_request_chars: int = Field(DEFAULT_LIMITS["max_request_chars"], ge=1, description="most characters a request's texts hold after Unicode normalization (NFKC), all together")
    max_request_tokens: int = Field(DEFAULT_LIMITS["max_request_tokens"], ge=1, description="most tokens (<eos> included) a request's texts hold, all together")
    truncate_chars: int = Field(DEFAULT_LIMITS["truncate_chars"], ge=1, description='with "truncate": true, each text is first cut to this many characters')

    def describe(self) -> str:
        """The limits in one sentence, for the OpenAPI document and the request schema."""
        return (f"at most {self.max_texts} texts of at most {self.max_text_chars} characters each; all texts together at most "
                f"{self.max_request_chars} characters after Unicode normalization (NFKC) and {self.max_request_tokens} tokens; "
                f'with "truncate": true each text is first cut to {self.truncate_chars} characters; '
                f"responses at most {self.max_response_bytes} bytes")


def _also_a_bare_string(schema: dict[str, Any]) -> None:
    """`texts` also takes a bare string (see the validator): say so in the JSON schema / OpenAPI."""
    array = {key: schema.pop(key) for key in ("type", "items", "minItems", "maxItems") if key in schema}
    bare = {"type": "string", **{k: v for k, v in array["items"].items() if k == "maxLength"}}
    schema["anyOf"] = [array, bare]


class EncodeRequest(BaseModel):
    """Texts to encode. A bare JSON string for `texts` is one text. (request_model(limits) adds the limits.)"""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    texts: list[Annotated[str, Field(strict=True)]] = Field(
        ...,
        min_length=1,
        fail_fast=True,
        description="texts to encode (a bare string is one text); each is tokenized with <eos> appended",
        json_schema_extra=lambda schema: _also_a_bare_string(schema),
    )
    return_: list[TensorName] = Field(
        default=["output", "hidden"], alias="return", min_length=1, fail_fast=True, description="which tensors to return"
    )
    h0: list[_H0Layer] | None = Field(
        default=None, fail_fast=True, description="initial hidden state (num_layers*D, B, H), e.g. a previous response's `hidden`"
    )
    truncate: bool = Field(
        default=False, strict=True, description="drop tokens past the model's max_length instead of answering 413 "
        "(each text is first cut to the server's truncate_chars characters: see the limits of `texts`)"
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


@lru_cache(maxsize=8)
def request_model(limits: Limits = Limits()) -> type[EncodeRequest]:
    """EncodeRequest with `texts` bounded by the limits (maxItems, maxLength in its JSON schema). Over a
    limit is a 413 (service.parse_body maps pydantic's too_long errors), not a 422."""
    texts = Field(
        ...,
        min_length=1,
        max_length=limits.max_texts,
        fail_fast=True,
        description=f"{EncodeRequest.model_fields['texts'].description}. Limits (413 naming the limit): {limits.describe()}",
        json_schema_extra=lambda schema: _also_a_bare_string(schema),
    )
    item = Annotated[str, Field(strict=True, max_length=limits.max_text_chars)]
    return create_model("EncodeRequest", __base__=EncodeRequest, __doc__=EncodeRequest.__doc__.split(" (")[0],
                        texts=(list[item], texts))
