"""The OpenAPI document of the served routes, generated from the pydantic models in schema.py.

    python -m gru_encoder.openapi > docs/openapi.json     # (make openapi) a test checks it is current
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic.json_schema import models_json_schema

from gru_encoder.schema import EncodeRequest, EncodeResponse, ErrorResponse, Limits

REF = "#/components/schemas/{model}"
# A 503 comes from TorchServe's frontend (its own exception name as `type`) or from the gateway
# (an ErrorResponse): the same three fields, looser types.
SERVICE_ERROR = {
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {"code": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}


def openapi_document(model_name: str = "gru_encoder") -> dict[str, Any]:
    """OpenAPI 3.1 for POST /predictions/{model_name} and GET /ping (the inference port)."""
    _, schemas = models_json_schema(
        [(EncodeRequest, "validation"), (EncodeResponse, "serialization"), (ErrorResponse, "validation")],
        ref_template=REF,
    )
    limits = Limits()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gru-encoder",
            "version": "1.0",
            "description": "An Embedding+GRU English text encoder served by TorchServe. See docs/API.md. "
            f"Default limits: {limits.max_texts} texts per request, {limits.max_text_chars} characters per "
            f"text, {limits.max_response_bytes} response bytes.",
        },
        "paths": {
            f"/predictions/{model_name}": {
                "post": {
                    "operationId": "encode",
                    "summary": "Encode texts: GRU output (B, T, D*H) and hidden (num_layers*D, B, H)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="EncodeRequest")}}},
                    },
                    "parameters": [
                        {
                            "name": "Accept",
                            "in": "header",
                            "required": False,
                            "description": "application/x-npz for the binary .npz response (numpy: np.load(io.BytesIO(body))); "
                            "anything else, or none, gives JSON. Errors are always JSON.",
                            "schema": {"type": "string", "examples": ["application/x-npz", "application/json"]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the tensors, padded to this request's longest text; header X-Server-Batch-Size: "
                            "how many requests shared the forward pass",
                            "content": {
                                "application/json": {"schema": {"$ref": REF.format(model="EncodeResponse")}},
                                "application/x-npz": {
                                    "schema": {"type": "string", "contentMediaType": "application/x-npz"},
                                    "description": "uncompressed numpy .npz with the same content: ids (B, T) int64, lengths (B,) "
                                    "int64, truncated (B,) bool, tokens (B, T) str padded with '', output (B, T, D*H) and "
                                    "hidden (num_layers*D, B, H) float32 when asked for, model (0-d str: its JSON object)",
                                },
                            },
                        },
                        "401": _error("unauthorized (gateway only): missing or unknown API key"),
                        "429": _error("rate_limited (gateway only): over this API key's request rate"),
                        "400": _error("invalid_json: the body is not JSON or not UTF-8"),
                        "415": _error("unsupported_media_type: a form or multipart body; send JSON"),
                        "413": _error("too_many_texts, input_too_long or response_too_large"),
                        "422": _error("validation_error: a field is missing, mistyped or out of range; h0 of the wrong shape"),
                        "500": _error("internal_error: a bug, logged on the server"),
                        "503": {
                            "description": "overloaded: the job queue is full, or no worker is up (restarting): retry with "
                            "backoff. Behind the gateway the body is an ErrorResponse; TorchServe alone answers its own "
                            '{"code", "type": "ServiceUnavailableException", "message"}',
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="ServiceError")}}},
                        },
                    },
                }
            },
            "/ping": {
                "get": {
                    "operationId": "ping",
                    "summary": "TorchServe's liveness (stays healthy while a worker crash-loops; use a real request for readiness)",
                    "responses": {"200": {"description": "the frontend is up"}},
                }
            },
        },
        "components": {"schemas": {**schemas["$defs"], "ServiceError": SERVICE_ERROR}},
    }


def main() -> None:
    json.dump(openapi_document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
