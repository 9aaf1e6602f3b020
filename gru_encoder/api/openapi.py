"""The OpenAPI document of the served routes, generated from the contract (contract.py: the response, the
error body and the error type -> status map) and the request model with its limits (schema.py).

    python -m gru_encoder.api.openapi > docs/openapi.json     # (make openapi) a test checks it is current
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dataclasses import fields

from gru_encoder.api.contract import ALSO_SENT_AS, ERRORS, NPZ_TYPE, TENSORS, Encoded
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


def error_responses() -> dict[str, Any]:
    """One entry per status of contract.ERRORS (its types and what they mean); 503 as TorchServe alone sends it too."""
    by_status: dict[int, list[str]] = {}
    for name, (status, meaning) in ERRORS.items():
        if name not in OTHER_ROUTES:
            by_status.setdefault(status, []).append(f"{name}: {meaning}")
    for name, statuses in ALSO_SENT_AS.items():  # e.g. unavailable as 504 (a timed-out upstream)
        for status in statuses:
            by_status.setdefault(status, [f"{name}: {ERRORS[name][1]}"])
    responses = {}
    for status, lines in sorted(by_status.items()):
        schema = "ServiceError" if status == 503 else "ErrorResponse"
        description = "; ".join(lines)
        if status == 503:
            description += ('. TorchServe alone (no gateway) answers its own {"code", "type": "ServiceUnavailableException", '
                            '"message"} when its queue is full or no worker is up')
        responses[str(status)] = {"description": description,
                                  "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}}
    return responses


def openapi_document(model_name: str = "gru_encoder") -> dict[str, Any]:
    """OpenAPI 3.1 for POST /predictions/{model_name} and GET /ping (the inference port)."""
    limits = Limits()
    request = request_model(limits).model_json_schema(ref_template=REF)
    error = ERROR_BODY.json_schema(ref_template=REF)
    error["title"] = "ErrorResponse"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gru-encoder",
            "version": "1.0",
            "description": "An Embedding+GRU English text encoder served by TorchServe. See docs/API.md. "
            f"Default limits (in the request schema; set per deployment): {limits.describe()}.",
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
                                NPZ_TYPE: {
                                    "schema": {"type": "string", "contentMediaType": "application/x-npz"},
                                    "description": "uncompressed numpy .npz with the same content: ids (B, T) int64, lengths (B,) "
                                    "int64, truncated (B,) bool, tokens (B, T) str padded with '', output (B, T, D*H) and "
                                    "hidden (num_layers*D, B, H) float32 when asked for, model (0-d str: its JSON object)",
                                },
                            },
                        },
                        **error_responses(),
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
        "components": {"schemas": {"EncodeRequest": request, "EncodeResponse": response_schema(), "ErrorResponse": error,
                                   "ServiceError": SERVICE_ERROR}},
    }


def main() -> None:
    json.dump(openapi_document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
