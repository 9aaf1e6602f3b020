"""The bench's peer: LitServe serving the same encoder through the same EncoderService, same JSON bytes.

    .venv/bin/python -m loadtests.litserve_peer --run-dir runs/default --port 8000   # POST /predict

Everything is set from the same serving settings as TorchServe (gru_encoder/host/settings.py): max_batch_size
= batch_size, batch_timeout = max_batch_delay_ms, workers_per_device = workers, torch threads as the
handler picks them, the same limits. Only the server around EncoderService differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import litserve as ls
import torch
from starlette.responses import Response

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.host.config_cli import config_from_args
from gru_encoder.api.service import EncoderService
from gru_encoder.host.settings import ServingSettings
from loadtests.peers import PeerSettings


@dataclass(frozen=True)
class PeerConfig(PeerSettings):
    """Serve the encoder with LitServe (the benchmark's peer server)."""


class EncoderAPI(ls.LitAPI):
    """LitServe's four verbs around EncoderService.handle, which takes a server batch of bodies."""

    def __init__(self, cfg: PeerConfig):
        super().__init__(max_batch_size=cfg.max_batch_size, batch_timeout=cfg.batch_timeout_ms / 1000)
        self.cfg = cfg

    def setup(self, device: str) -> None:
        """Load the run on the CPU with the handler's limits and thread count."""
        settings = ServingSettings.from_env(workers=self.cfg.workers, torch_threads=self.cfg.torch_threads)
        torch.set_num_threads(settings.threads_per_worker())
        limits = settings.limits()
        self.service = EncoderService(load_encoder(self.cfg.run_dir), limits, "cpu")

    def decode_request(self, request):
        """The JSON body as LitServe parsed it (TorchServe's worker also hands the handler parsed JSON)."""
        return request

    def batch(self, inputs):
        return list(inputs)

    def predict(self, bodies):
        """One packed forward pass for the whole server batch: [(status, body bytes, batch size)]."""
        return [(status, body, len(bodies)) for status, body in self.service.handle(bodies)]

    def unbatch(self, outputs):
        return outputs

    def encode_response(self, output) -> Response:
        """The service's compact JSON bytes as they are, with the handler's headers."""
        status, body, batch_size = output
        return Response(body, status_code=status, media_type="application/json", headers={"X-Server-Batch-Size": str(batch_size)})


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_args(PeerConfig, argv)
    server = ls.LitServer(EncoderAPI(cfg), accelerator="cpu", workers_per_device=cfg.workers, timeout=30)
    server.run(port=cfg.port, host="127.0.0.1", generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
