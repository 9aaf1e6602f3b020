"""What `GET /info` and OpenAI's `GET /v1/models` answer, generated from the served run and settings.

Every value comes from the run's config.json (as loaded and hash-checked by artifacts.load_encoder),
the vocab the tokenizer loaded, the archive's version, the serving settings the worker runs with and the
served versions (<model_store>/versions.json, read again whenever it changes):
nothing here is written by hand, so a new run or new limits change the answer by themselves.
"""

from __future__ import annotations

import json
from typing import Any


def model_info(config: dict[str, Any], vocab_size: int, version: str, limits: dict[str, int],
               batching: dict[str, Any]) -> dict[str, Any]:
    """The model, its shapes, its tokenizer's limit, the request limits and the batching the host runs, for
    GET /info (the host passes the last two: this floor never reads its settings)."""
    enc, tok = config["encoder"], config["tokenizer"]
    directions = 2 if enc["bidirectional"] else 1
    return {
        "name": config["model_name"],
        "version": version,
        "weights_sha256": config["files"]["weights"]["sha256"],
        "vocab_sha256": config["files"]["vocab"]["sha256"],
        "vocab_size": vocab_size,
        "hidden_size": enc["hidden_size"],
        "num_layers": enc["num_layers"],
        "bidirectional": enc["bidirectional"],
        "num_directions": directions,
        "embedding_size": directions * enc["hidden_size"],  # /v1/embeddings: last layer, directions side by side
        "max_tokens": tok["max_length"],  # per text, <eos> included
        "limits": limits,
        "batching": batching,
    }


def models_list(info: dict[str, Any], created: int) -> dict[str, Any]:
    """OpenAI's model list (GET /v1/models): the model (its default version), and when several versions are
    served (info's `versions`) one id per version, `<name>@<version>`. `created` is the archive's time."""
    versions = [v["version"] for v in info.get("versions", ())]
    ids = [info["name"], *(f"{info['name']}@{v}" for v in versions if len(versions) > 1)]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": created, "owned_by": "gru-encoder"} for i in ids]}


def with_versions(info: dict[str, Any], versions: dict[str, Any]) -> dict[str, Any]:
    """GET /info with the served versions (host/versions.py's summary: `default_version`, `versions`)."""
    return {**info, **versions}


def to_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
