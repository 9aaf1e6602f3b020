"""A/B of TorchServe configurations: one-text requests under wrk, configurations interleaved, CPU from /proc.

    .venv/bin/python -m loadtests.ab --variant 'old={"max_batch_delay_ms": 2, "ts_config": "/tmp/old/config.properties"}' \
        --variant 'new={}' --repeats 4 --seconds 10

Each variant is a name and serving settings to override (gru_encoder/host/settings.py fields, as
loadtests/torchserve_process.py takes them); `model_store` names the folder of another gru_encoder.mar
(e.g. one built from an earlier commit). `ts_config` names another fixed-settings file: TorchServe's
logging comes from the log4j2.xml beside it, or TorchServe's own when there is none (a copy of
config.properties alone in a folder gives the logging as TorchServe ships it). Every repeat starts each
variant's TorchServe afresh, warms it up with wrk, then measures each connection count; the machine
busy time is printed beside, so that a busy minute shows. One JSON line per cell, then the ranges.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from loadtests import wrk
from loadtests.cpu import Sampler
from loadtests.torchserve_process import ROOT, TorchServe
from loadtests.workload import held_out_texts

PATH = "/predictions/gru_encoder"


def measure(name: str, settings: dict, connections: list[int], seconds: float, warmup: float, bodies: list[bytes]) -> list[dict]:
    """Start one configuration, warm it up, measure each connection count; one dict per cell."""
    cells = []
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp:
        tmp = Path(tmp)
        settings = dict(settings)
        store = Path(settings.pop("model_store", ROOT / "model_store"))  # another archive: its folder
        ts = TorchServe(store, tmp, **settings).start()
        try:
            lua = wrk.script(tmp, PATH, bodies)
            wrk.finish(wrk.start(ts.url, PATH, 8, warmup, lua), warmup + 60)  # Java's JIT compiles for seconds
            for c in connections:
                proc = wrk.start(ts.url, PATH, c, seconds, lua)
                with Sampler({"server": ts.proc.pid, "loadgen": proc.pid}) as sampler:
                    f = wrk.figures(wrk.finish(proc, seconds + 60))
                r = sampler.rates()
                cells.append({
                    "variant": name, "connections": c, "req_per_s": round(f["req_per_s"]), "p50_ms": round(f["p50_ms"], 2),
                    "p99_ms": round(f["p99_ms"], 2), "failures": f["failures"],
                    "server_cpu_ms_per_request": round(1e3 * r["server"] / f["req_per_s"], 3),
                    "frontend_ms": round(1e3 * r.get("server.frontend", 0.0) / f["req_per_s"], 3),
                    "workers_ms": round(1e3 * r.get("server.worker", 0.0) / f["req_per_s"], 3),
                    "wrk_cores": round(r["loadgen"], 3), "machine_busy_cores": round(r["machine"], 2),
                })
                print(json.dumps(cells[-1]), flush=True)
        finally:
            ts.stop()
    return cells


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help='name={"setting": value, ...} (repeat the flag)')
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    if not wrk.available():
        parser.error(wrk.INSTALL_HINT)
    variants = []
    for text in args.variant:
        name, _, settings = text.partition("=")
        variants.append((name, json.loads(settings or "{}")))
    connections = [int(c) for c in args.connections.split(",")]
    bodies = wrk.one_text_bodies(held_out_texts())
    cells = []
    for _ in range(args.repeats):  # interleaved: a noisy minute hurts every variant alike
        for name, settings in variants:
            cells += measure(name, settings, connections, args.seconds, args.warmup, bodies)
    for name, _ in variants:
        for c in connections:
            mine = [x for x in cells if x["variant"] == name and x["connections"] == c]
            spans = {k: (min(x[k] for x in mine), max(x[k] for x in mine)) for k in ("p50_ms", "server_cpu_ms_per_request", "req_per_s")}
            print(f"{name} at {c} connections over {len(mine)} runs: " + ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in spans.items()))


if __name__ == "__main__":
    main()
