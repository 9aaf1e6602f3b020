"""docs/openapi.json is generated from the contract and the request model and must be current; it describes what is served."""

from __future__ import annotations

import json

from gru_encoder.api.openapi import openapi_document
from gru_encoder.api.contract import ALSO_SENT_AS, ERROR_STATUS, ErrorType
from gru_encoder.api.schema import EncodeRequest, Limits
from tests import ROOT

DOC = ROOT / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    committed = json.loads(DOC.read_text())
    assert committed == openapi_document(), "docs/openapi.json is stale: run `make openapi` and commit it"


def test_document_describes_the_contract() -> None:
    doc = openapi_document()
    post = doc["paths"]["/predictions/gru_encoder"]["post"]
    # Every status of the error map that this route can answer (404/405 belong to other routes and methods).
    route_statuses = {str(s) for t, s in ERROR_STATUS.items() if t not in ("not_found", "method_not_allowed")}
    route_statuses |= {str(s) for statuses in ALSO_SENT_AS.values() for s in statuses}
    assert set(post["responses"]) == {"200"} | route_statuses
    for type_, status in ERROR_STATUS.items():
        if str(status) in post["responses"]:
            assert f"{type_}:" in post["responses"][str(status)]["description"]
    schemas = doc["components"]["schemas"]
    request = schemas["EncodeRequest"]
    assert request["required"] == ["texts"] and request["additionalProperties"] is False
    # The limits are in the schema: an array of at most max_texts strings, or a bare string (one text).
    limits = Limits()
    array, bare = request["properties"]["texts"]["anyOf"]
    assert array["maxItems"] == limits.max_texts and array["items"]["maxLength"] == limits.max_text_chars
    assert bare == {"type": "string", "maxLength": limits.max_text_chars}
    assert request["properties"]["return"]["items"]["enum"] == ["output", "hidden"]
    assert set(schemas["ErrorResponse"]["properties"]["type"]["enum"]) == set(ErrorType.__args__) == set(ERROR_STATUS)
    # Every field of the request model is in the document, under its wire name.
    assert set(request["properties"]) == {f.alias or name for name, f in EncodeRequest.model_fields.items()}
