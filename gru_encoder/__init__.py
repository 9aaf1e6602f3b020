"""gru_encoder: four floors, each importing only those below it (tests/unit/test_layout.py checks it).

    core/    the model, tokenizer and artifacts
    api/     the contract, schema, service, dialects, route table and OpenAPI (imports core)
    host/    the TorchServe launcher, serving settings, metrics and worker patch (imports api, core)
    client.py  the HTTP client: requests and numpy only (imports api's contract and limits)

Importing the package imports nothing heavy: `import gru_encoder.client` needs neither torch nor
pydantic. The names below load their module on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ArtifactError": "core.artifacts", "LoadedEncoder": "core.artifacts", "load_encoder": "core.artifacts",
    "save_encoder": "core.artifacts", "Encoder": "core.model", "EncoderConfig": "core.model", "pad_batch": "core.model",
    "Encoding": "core.tokenizer", "InputTooLongError": "core.tokenizer", "Tokenizer": "core.tokenizer",
    "TokenizerConfig": "core.tokenizer", "Encoded": "api.contract", "ErrorBody": "api.contract",
    "EncoderClient": "client", "EncoderError": "client",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gru_encoder' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gru_encoder.{_LAZY[name]}"), name)
