"""The OpenAPI document of every public route, generated from the route table (routes.py), the contract
(contract.py: the response, the error body and the error type -> status map), the request models with
their limits (schema.py, openai_api.py).

    python -m gru_encoder.api.openapi > docs/openapi.json     # (make openapi) a test checks it is current
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dataclasses import fields

from gru_encoder.api.contract import ALSO_SENT_AS, ERRORS, NPZ_TYPE, TENSORS, Encoded
from gru_encoder.api.openai_api import EmbeddingsRequest
from gru_encoder.api.routes import NATIVE_PATH, OPENAI, ROUTES, Route
from gru_encoder.api.schema import ERROR_BODY, Limits, request_model

REF = "#/components/schemas/{model}"
# A 503 comes from TorchServe's frontend (its own exception name as `type`) or from the gateway
# (an ErrorResponse): the same three fields, looser types.
SERVICE_ERROR = {
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {"code": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"}},
}


# Error types that never answer a well-formed call of this route (other paths, other methods).
OTHER_ROUTES = {"not_found", "method_not_allowed"}


def response_schema() -> dict[str, Any]:
    """EncodeResponse: the JSON body written from contract.Encoded, read off its fields."""
    props = {f.name: {**f.metadata["json_schema"], "description": f.metadata["description"]} for f in fields(Encoded)}
    props["shapes"] = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}},
                       "description": "shape of ids, lengths and each returned tensor"}
    required = [f.name for f in fields(Encoded) if f.name not in TENSORS] + ["shapes"]
    return {"type": "object", "title": "EncodeResponse", "description": Encoded.__doc__, "properties": props,
            "required": required, "additionalProperties": False}


OPENAI_ERROR = {
    "type": "object", "title": "OpenAIError", "required": ["error"],
    "description": "an error on /v1/*, in OpenAI's shape: `code` is the project's error type, `param` the request field",
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string", "enum": ["invalid_request_error", "authentication_error",
                                                                           "rate_limit_error", "server_error"]},
        "param": {"type": ["string", "null"]}, "code": {"type": "string", "enum": sorted(ERRORS)}}}},
}
EMBEDDINGS_RESPONSE = {
    "type": "object", "title": "EmbeddingsResponse", "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
            "object": {"const": "embedding"}, "index": {"type": "integer"},
            "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "description": "base64 of little-endian float32"}]}}}},
        "model": {"type": "string"},
        "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                  "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}},
    },
}
MODEL_LIST = {
    "type": "object", "title": "ModelList", "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}},
}
INFO = {
    "type": "object", "title": "Info", "description": "what the server runs (gru_encoder/api/info.py)",
    "required": ["name", "version", "weights_sha256", "vocab_sha256", "vocab_size", "hidden_size", "num_layers", "bidirectional",
                 "num_directions", "embedding_size", "max_tokens", "limits", "batching"],
    "properties": {**{k: {"type": "string"} for k in ("name", "version", "weights_sha256", "vocab_sha256")},
                   **{k: {"type": "integer"} for k in ("vocab_size", "hidden_size", "num_layers", "num_directions", "embedding_size", "max_tokens")},
                   "bidirectional": {"type": "boolean"}, "limits": {"type": "object"}, "batching": {"type": "object"},
                   "default_version": {"type": "string", "description": "the version the unpinned routes answer with"},
                   "canary": {"type": ["object", "null"], "description": "a version that answers a share of the unpinned "
                              "callers, sticky per caller (API key, else X-Caller-ID, else address)",
                              "properties": {"version": {"type": "string"}, "percent": {"type": "number"}}},
                   "versions": {"type": "array", "description": "every served version (POST /predictions/gru_encoder/{version})",
                                "items": {"type": "object", "required": ["version", "default"], "properties": {
                                    "version": {"type": "string"}, "default": {"type": "boolean"},
                                    "weights_sha256": {"type": ["string", "null"]}, "test_bleu": {"type": ["number", "null"]},
                                    "trained_at": {"type": ["string", "null"]}, "workers": {"type": ["integer", "null"]},
                                    "unpinned_percent": {"type": "number", "description": "its share of unpinned callers"}}}}},
}
PING = {"type": "object", "title": "Ping", "required": ["status"], "properties": {"status": {"type": "string"}}}
HEALTH = {"type": "object", "title": "Health", "required": ["status", "model"],
          "properties": {"status": {"const": "healthy"}, "model": {"type": "string"}}}
EXAMPLES = {"EncodeRequest": {"texts": ["i am cold ."], "return": ["hidden"]},
            "EmbeddingsRequest": {"input": ["i am cold ."], "model": "gru_encoder"}}
# What a call of each kind of route can be answered with besides its 200 (the gateway's refusals and
# TorchServe's own errors; the request's own 4xx where the handler validates a body).
GATEWAY_ERRORS = ("bad_request", "header_too_large", "unauthorized", "method_not_allowed", "request_too_large", "rate_limited",
                  "unsupported_media_type", "overloaded", "unavailable", "internal_error")


def error_responses(types: set[str] | None = None, schema: str = "ErrorResponse") -> dict[str, Any]:
    """One entry per status of contract.ERRORS (its types and what they mean), for the types given
    (default: all that a call of an existing route can meet); a 503 as TorchServe alone sends it too."""
    by_status: dict[int, list[str]] = {}
    for name, (status, meaning) in ERRORS.items():
        if name not in OTHER_ROUTES and (types is None or name in types):
            by_status.setdefault(status, []).append(f"{name}: {meaning}")
    for name, statuses in ALSO_SENT_AS.items():  # e.g. unavailable as 504 (a timed-out upstream)
        if types is None or name in types:
            for status in statuses:
                by_status.setdefault(status, [f"{name}: {ERRORS[name][1]}"])
    responses = {}
    for status, lines in sorted(by_status.items()):
        name = "ServiceError" if status == 503 and schema == "ErrorResponse" else schema
        description = "; ".join(lines)
        if status == 503 and schema == "ErrorResponse":
            description += ('. TorchServe alone (no gateway) answers its own {"code", "type": "ServiceUnavailableException", '
                            '"message"} when its queue is full or no worker is up')
        responses[str(status)] = {"description": description,
                                  "content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}}}
    return responses


def _operation(route: Route) -> dict[str, Any]:
    """One route's operation, from the route table."""
    error_schema = "OpenAIError" if route.dialect == OPENAI else "ErrorResponse"
    if route.request is not None:  # a body the handler validates: every error of the map
        errors = error_responses(None, error_schema)
    elif route.upstream == "handler":  # keyed, no body
        errors = error_responses(set(GATEWAY_ERRORS) - {"request_too_large", "unsupported_media_type"}, error_schema)
    else:
        errors = error_responses({"method_not_allowed", "rate_limited", "unavailable", "bad_request", "header_too_large"}, error_schema)
    op: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary, "tags": [route.dialect]}
    if route.key:
        op["security"] = [{"bearer": []}, {"apiKey": []}]
    if route.request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF.format(model=route.request)}, "example": EXAMPLES[route.request]}}}
    ok = {"description": "the answer", "content": {"application/json": {"schema": {"$ref": REF.format(model=route.response)}}}}
    for name, pattern in route.params:  # a path parameter: its pattern is what the gateway lets through
        op.setdefault("parameters", []).append({
            "name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^{pattern}$"},
            "description": "a served version of the model (GET /info lists them), e.g. 1.0; another is a 404 not_found",
            "example": "1.0"})
        errors["404"] = {"description": "not_found: this version is not served (GET /info lists the served versions)",
                         "content": {"application/json": {"schema": {"$ref": REF.format(model=error_schema)}}}}
    if route.path.startswith(NATIVE_PATH):
        op.setdefault("parameters", []).append({
            "name": "Accept", "in": "header", "required": False,
            "description": "application/x-npz for the binary .npz response (numpy: np.load(io.BytesIO(body))); anything else, or "
                           "none, gives JSON. Errors are always JSON.",
            "schema": {"type": "string", "examples": ["application/x-npz", "application/json"]}})
        ok["description"] = ("the tensors, padded to this request's longest text; header X-Server-Batch-Size: how many requests "
                             "shared the forward pass")
        ok["content"][NPZ_TYPE] = {
            "schema": {"type": "string", "contentMediaType": "application/x-npz"},
            "description": "uncompressed numpy .npz with the same content: ids (B, T) int64, lengths (B,) int64, truncated (B,) bool, "
                           "tokens (B, T) str padded with '', output (B, T, D*H) and hidden (num_layers*D, B, H) float32 when asked "
                           "for, model (0-d str: its JSON object)"}
    op["responses"] = {"200": ok, **errors}
    return op


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """OpenAPI 3.1 of every public route (routes.ROUTES), as the gateway and `make serve` answer them."""
    limits = Limits()
    request = request_model(limits).model_json_schema(ref_template=REF)
    error = ERROR_BODY.json_schema(ref_template=REF)
    error["title"] = "ErrorResponse"
    embeddings = EmbeddingsRequest.model_json_schema(ref_template=REF)
    paths: dict[str, Any] = {}
    for route in routes:
        for method in route.methods:
            if method != "HEAD":  # HEAD is GET without a body
                paths.setdefault(route.path, {})[method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gru-encoder",
            "version": "1.0",
            "description": "An Embedding+GRU English text encoder served by TorchServe behind its gateway (docs/API.md). "
            f"Default limits (in the request schema; set per deployment): {limits.describe()}.",
        },
        "paths": paths,
        "components": {
            "schemas": {"EncodeRequest": request, "EncodeResponse": response_schema(), "ErrorResponse": error,
                        "ServiceError": SERVICE_ERROR, "EmbeddingsRequest": embeddings, "EmbeddingsResponse": EMBEDDINGS_RESPONSE,
                        "OpenAIError": OPENAI_ERROR, "ModelList": MODEL_LIST, "Info": INFO, "Ping": PING, "Health": HEALTH},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>, where the gateway asks for keys"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def main() -> None:
    json.dump(openapi_document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
