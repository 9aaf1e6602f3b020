"""gru_encoder: the model, tokenizer, artifacts, contract and serving code shared by training, serving,
the client, the tools and the tests.

Importing the package imports nothing heavy: `import gru_encoder.client` needs neither torch nor
pydantic. The names below load their module on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ArtifactError": "artifacts", "LoadedEncoder": "artifacts", "load_encoder": "artifacts", "save_encoder": "artifacts",
    "Encoder": "model", "EncoderConfig": "model", "pad_batch": "model",
    "Encoding": "tokenizer", "InputTooLongError": "tokenizer", "Tokenizer": "tokenizer", "TokenizerConfig": "tokenizer",
    "Encoded": "contract", "ErrorBody": "contract",
    "EncoderClient": "client", "EncoderError": "client",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gru_encoder' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gru_encoder.{_LAZY[name]}"), name)
