"""What the served answers must equal: the same run's encoder and handler code run here, in-process,
with the limits the container got, and the project's error contract. Every import from gru_encoder in
tests/e2e is in this file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import TypeAdapter

from gru_encoder.core.artifacts import LoadedEncoder, load_encoder
from gru_encoder.api.contract import ALSO_SENT_AS, ERROR_STATUS, ErrorBody
from gru_encoder.api.service import EncoderService
from gru_encoder.host.settings import ENV_PREFIX, RESOLVED_ENV, ServingSettings

ERROR_BODY = TypeAdapter(ErrorBody)  # checks the fields' types, `type` among the contract's error types


@dataclass
class Reference:
    loaded: LoadedEncoder
    service: EncoderService  # the handler's own code, with the container's limits

    @property
    def max_texts(self) -> int:
        return self.service.limits.max_texts

    def shapes(self, batch: int, seq: int) -> dict[str, list[int]]:
        """PyTorch's conventions: output (B, T, D*H), hidden (L*D, B, H)."""
        cfg = self.loaded.encoder.config
        d = 2 if cfg.bidirectional else 1
        return {"ids": [batch, seq], "lengths": [batch], "output": [batch, seq, d * cfg.hidden_size],
                "hidden": [cfg.num_layers * d, batch, cfg.hidden_size]}

    def ids(self, text: str) -> list[int]:
        return self.loaded.tokenizer.encode(text).ids

    def encode(self, ids: list[list[int]], lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder run here on the served ids: output (B, T, D*H), hidden (L*D, B, H)."""
        with torch.no_grad():
            output, hidden = self.loaded.encoder(torch.tensor(ids), torch.tensor(lengths))
        return output.numpy(), hidden.numpy()

    def handler_reply(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) the handler's code gives this raw request body."""
        return self.service.handle([body])[0]


def reference(run_dir: Path, compose_env: Mapping[str, str]) -> Reference:
    """compose_env: the environment of the compose commands, whose GRU_ENCODER_* variables compose hands
    to the container (the launcher's resolved GRU_ENCODER_SETTINGS is the container's own, never the host's)."""
    passed_on = {k: v for k, v in compose_env.items() if k.startswith(ENV_PREFIX) and k != RESOLVED_ENV}
    loaded = load_encoder(run_dir)
    return Reference(loaded, EncoderService(loaded, ServingSettings.from_env(passed_on).limits()))


def parse_error(body: object) -> ErrorBody:
    """The body as the project's error (code, type, message, field), or a pydantic ValidationError."""
    return ERROR_BODY.validate_python(body)


def status_of_type(code: int, type_: str) -> bool:
    """Is this status the one the contract gives this error type (or one it is also sent with)?"""
    return code == ERROR_STATUS[type_] or code in ALSO_SENT_AS.get(type_, ())
