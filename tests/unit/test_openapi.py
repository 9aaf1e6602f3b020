"""docs/openapi.json is generated from the pydantic models and must be current; it describes what is served."""

from __future__ import annotations

import json
from pathlib import Path

from gru_encoder.openapi import openapi_document
from gru_encoder.schema import EncodeRequest, ErrorType
from tests import ROOT

DOC = ROOT / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    committed = json.loads(DOC.read_text())
    assert committed == openapi_document(), "docs/openapi.json is stale: run `make openapi` and commit it"


def test_document_describes_the_contract() -> None:
    doc = openapi_document()
    post = doc["paths"]["/predictions/gru_encoder"]["post"]
    assert set(post["responses"]) == {"200", "400", "401", "413", "415", "422", "429", "500", "503"}
    schemas = doc["components"]["schemas"]
    request = schemas["EncodeRequest"]
    assert request["required"] == ["texts"] and request["additionalProperties"] is False
    assert {"type": "string"} in request["properties"]["texts"]["anyOf"]  # a bare string is one text
    assert request["properties"]["return"]["items"]["enum"] == ["output", "hidden"]
    assert set(schemas["ErrorResponse"]["properties"]["type"]["enum"]) == set(ErrorType.__args__)
    # Every field of the request model is in the document, under its wire name.
    assert set(request["properties"]) == {f.alias or name for name, f in EncodeRequest.model_fields.items()}
