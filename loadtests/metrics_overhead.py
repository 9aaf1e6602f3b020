"""The worker CPU the handler's metrics cost per server batch, in this process (no HTTP, no TorchServe).

    .venv/bin/python -m loadtests.metrics_overhead                 # batches of 1 and 16 requests
    .venv/bin/python -m loadtests.metrics_overhead --batch 16 --calls 300

The handler's path (gru_encoder.api.router.Router, then gru_encoder.host.metrics.HandlerMetrics) with and without
TorchServe's real metrics cache (ts.metrics, fed the launcher's metrics config), one torch thread, CPU
time (time.process_time) per batch; the two are interleaved and repeated, and every round is printed:
the spread is the machine's. Each metric update is a log line for TorchServe's frontend to parse; here
the lines go to /dev/null, so the frontend's own parsing is not counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from gru_encoder.api import info
from gru_encoder.core.artifacts import load_encoder
from gru_encoder.host.metrics import HandlerMetrics
from gru_encoder.api.router import Router
from gru_encoder.host.serve import write_metrics_config
from gru_encoder.api.service import EncoderService
from gru_encoder.host.settings import ServingSettings


def cpu_us_per_batch(router: Router, metrics: HandlerMetrics | None, batch: int, calls: int) -> float:
    bodies = [json.dumps({"texts": ["i am cold ."], "return": ["hidden"]}).encode()] * batch
    t0 = time.process_time()
    for _ in range(calls):
        replies = router.handle(bodies, [None] * batch, ["json"] * batch)
        if metrics is not None:
            metrics.record([r.route for r in replies], [r.status for r in replies], [r.error_type for r in replies], router.stats)
    if metrics is not None:
        metrics.flush()  # what the background thread sends, counted here (process_time counts every thread)
    return (time.process_time() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="runs/default")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="requests per server batch")
    parser.add_argument("--calls", type=int, default=500, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl  # TorchServe's (the serve extra)

    torch.set_num_threads(1)
    # TorchServe's workers log at INFO to stdout, where the frontend reads the metric lines.
    logging.basicConfig(level=logging.INFO, stream=open("/dev/null", "w"))
    loaded = load_encoder(args.run_dir)
    service = EncoderService(loaded)
    about = info.model_info(loaded.config, len(loaded.tokenizer), "1.0", **ServingSettings().info())
    router = Router(service, {"info": info.to_bytes(about), "models": info.to_bytes(info.models_list(about, 0))})
    config = Path(tempfile.mkdtemp()) / "metrics.yaml"
    write_metrics_config(config)
    cache = MetricsCacheYamlImpl(str(config))
    cache.initialize_cache()
    # A flush per measurement, not per interval: the sums are sent once a measurement, as a worker
    # would every interval_s.
    metrics = HandlerMetrics(cache, loaded.config["model_name"], interval_s=3600)
    assert metrics.metrics, "the metrics config declares none of the handler's metrics"
    for batch in args.batch:
        cpu_us_per_batch(router, metrics, batch, 50)  # warm up
        for r in range(args.rounds):
            off = cpu_us_per_batch(router, None, batch, args.calls)
            on = cpu_us_per_batch(router, metrics, batch, args.calls)
            print(f"batch {batch:3d} round {r + 1}: {off:8.1f} us without metrics, {on:8.1f} us with: "
                  f"metrics {on - off:7.1f} us ({(on - off) / off:5.1%})", flush=True)


if __name__ == "__main__":
    main()
