"""The bench's second peer: Ray Serve serving the same encoder through the same EncoderService, same bytes.

    .venv/bin/python -m loadtests.rayserve_peer --run-dir runs/default --port 8000   # POST /predict

Ray Serve is what a team already running Ray would pick. Its batching is the same policy as TorchServe's
and LitServe's (`@serve.batch`: up to max_batch_size requests, waiting at most batch_wait_timeout_s for
them to gather), so everything is set from the same serving settings (gru_encoder/host/settings.py):
max_batch_size = batch_size, batch_wait_timeout_s = max_batch_delay_ms, replicas = workers, torch
threads as the handler picks them, the same limits. Only the server around EncoderService differs.

This process starts a private local Ray cluster (its own temp folder and free ports, no dashboard),
deploys one application and stays in the foreground; SIGTERM or Ctrl-C shuts Serve and Ray down.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field

from gru_encoder.host.config_cli import config_from_args
from gru_encoder.host.settings import ServingSettings
from loadtests.peers import PeerSettings


@dataclass(frozen=True)
class RayPeerConfig(PeerSettings):
    """Serve the encoder with Ray Serve (the benchmark's second peer server)."""

    temp_dir: str = field(default="", metadata={"help": "Ray's session folder (default: a new one under TMPDIR)"})


def build_app(cfg: RayPeerConfig):
    """The Serve application: `workers` replicas, each an EncoderService behind @serve.batch."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    settings = ServingSettings.from_env(workers=cfg.workers, torch_threads=cfg.torch_threads)
    threads = settings.threads_per_worker()  # resolved here: replicas see the same machine

    # num_cpus=0: Ray's CPU bookkeeping would otherwise refuse a second replica on a 2-CPU machine
    # already holding its proxy; the threads are set by hand, as the handler does.
    @serve.deployment(num_replicas=cfg.workers, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    class Encoder:
        def __init__(self, run_dir: str) -> None:
            import torch

            from gru_encoder.core.artifacts import load_encoder
            from gru_encoder.api.service import EncoderService

            torch.set_num_threads(threads)
            self.service = EncoderService(load_encoder(run_dir), settings.limits(), "cpu")
            self.encode.set_max_batch_size(cfg.max_batch_size)
            self.encode.set_batch_wait_timeout_s(cfg.batch_timeout_ms / 1000)

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)  # replaced in __init__ by the settings
        async def encode(self, bodies: list[bytes]) -> list[tuple[int, bytes, int]]:
            """One packed forward pass for the whole server batch: [(status, body, batch size)]."""
            return [(status, body, len(bodies)) for status, body in self.service.handle(bodies)]

        async def __call__(self, request: Request) -> Response:
            """The raw body in, the service's bytes out, with the handler's headers."""
            status, body, batch_size = await self.encode(await request.body())
            return Response(body, status_code=status, media_type="application/json", headers={"X-Server-Batch-Size": str(batch_size)})

    return Encoder.bind(os.path.abspath(cfg.run_dir))


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_args(RayPeerConfig, argv)
    import ray
    from ray import serve

    # Ray's unix sockets live under the temp folder, whose path must stay short (108 bytes).
    temp_dir = cfg.temp_dir or tempfile.mkdtemp(prefix="ray-")
    # Ray starts its workers (the replicas, the HTTP proxy) at nice 15; on a machine shared with the load
    # generator and other work that would starve the peer. TorchServe's and LitServe's run at 0: so here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir,
             configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": cfg.port}, logging_config={"log_level": "WARNING"})
    serve.run(build_app(cfg), name="gru_encoder", route_prefix="/predict")
    print(f"Ray Serve peer on http://127.0.0.1:{cfg.port}/predict", flush=True)

    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    serve.shutdown()
    ray.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
