"""The bench's peer: LitServe serving the same encoder through the same EncoderService, same JSON bytes.

    .venv/bin/python -m loadtests.litserve_peer --run-dir runs/default --port 8000   # POST /predict

Everything is set like TorchServe's handlers/model-config.yaml: max_batch_size = batchSize,
batch_timeout = maxBatchDelay, workers_per_device = minWorkers, and torch threads as the handler
picks them (torch_threads, or CPU cores / workers). Only the server around EncoderService differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import litserve as ls
import torch
import yaml
from starlette.responses import Response

from gru_encoder.artifacts import load_encoder
from gru_encoder.config_cli import config_from_args
from gru_encoder.schema import Limits
from gru_encoder.service import EncoderService
from loadtests.workload import ROOT

MODEL_CONFIG = yaml.safe_load((ROOT / "handlers" / "model-config.yaml").read_text())


@dataclass(frozen=True)
class PeerConfig:
    """Serve the encoder with LitServe (the benchmark's peer server)."""

    run_dir: str = field(default="runs/default", metadata={"help": "run folder written by training"})
    port: int = 8000
    max_batch_size: int = field(default=MODEL_CONFIG["batchSize"], metadata={"help": "= batchSize in model-config.yaml"})
    batch_timeout_ms: float = field(default=MODEL_CONFIG["maxBatchDelay"], metadata={"help": "= maxBatchDelay"})
    workers: int = field(default=MODEL_CONFIG["minWorkers"], metadata={"help": "= minWorkers"})
    torch_threads: int = field(
        default=MODEL_CONFIG.get("gru_encoder", {}).get("torch_threads", 0), metadata={"help": "0 = CPU cores / workers, as the handler"}
    )


class EncoderAPI(ls.LitAPI):
    """LitServe's four verbs around EncoderService.handle, which takes a server batch of bodies."""

    def __init__(self, cfg: PeerConfig):
        super().__init__(max_batch_size=cfg.max_batch_size, batch_timeout=cfg.batch_timeout_ms / 1000)
        self.cfg = cfg

    def setup(self, device: str) -> None:
        """Load the run on the CPU with the handler's limits and thread count."""
        torch.set_num_threads(self.cfg.torch_threads or max(1, (os.cpu_count() or 1) // self.cfg.workers))
        limits = Limits(**MODEL_CONFIG.get("gru_encoder", {}).get("limits", {}))
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
