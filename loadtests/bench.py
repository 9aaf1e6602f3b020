"""One benchmark run: the in-process limit, TorchServe and a LitServe peer, same machine, same texts.

    make bench                                   # archive, then the full run (~10 min on 2 cores)
    .venv/bin/python -m loadtests.bench --help   # every flag, generated from BenchConfig
    .venv/bin/python -m loadtests.bench --smoke  # seconds; the tests run it

1. limit: EncoderService.handle (parse, tokenize, one packed forward, serialize) in this process, on
   server batches of `batch_size` requests of the locust mix: texts/s without HTTP.
2. torchserve: the real .mar on free ports, under locust (headless, its own process) at each user count.
3. litserve: loadtests/litserve_peer.py (same EncoderService, same JSON bytes, same batching), same load.
Each (server, users) cell is run `repeats` times, interleaved, and the median is reported. Then JSON
and .npz responses are compared on TorchServe for large outputs (8-32 texts with `output`).
Writes results.json, results.md and chart.png under <out-dir>/<timestamp>/.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import requests
import torch

from gru_encoder.artifacts import load_encoder
from gru_encoder.config_cli import config_from_args
from gru_encoder.schema import Limits
from gru_encoder.settings import ServingSettings
from loadtests.workload import ROOT, held_out_texts, make_body, request_mix

VENV_BIN = Path(sys.executable).parent
SETTINGS = ServingSettings.from_env()  # what TorchServe and the peer are started with


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark the served encoder against its in-process limit and a LitServe peer."""

    run_dir: str = field(default="runs/default", metadata={"help": "trained run (limit and peer load it)"})
    model_store: str = field(default="model_store", metadata={"help": "folder holding gru_encoder.mar (make archive)"})
    users: str = field(default="1,8,32,64", metadata={"help": "locust user counts (closed loop, no think time)"})
    seconds: float = field(default=15.0, metadata={"help": "measured seconds per (server, users) cell"})
    repeats: int = field(default=3, metadata={"help": "runs per cell; the median is reported"})
    servers: str = field(default="torchserve,litserve", metadata={"help": "which servers to load"})
    limit_requests: int = field(default=1600, metadata={"help": "requests of the mix replayed in-process per repeat"})
    npz_users: int = field(default=8, metadata={"help": "users for the JSON vs .npz comparison; 0 = skip it"})
    warmup_seconds: float = field(default=10.0, metadata={"help": "locust load on each server before measuring (JIT, caches)"})
    torchserve_url: str = field(default="", metadata={"help": "load this running TorchServe instead of starting one"})
    out_dir: str = field(default="loadtests/results", metadata={"help": "a <timestamp>/ folder is written here"})
    smoke: bool = field(default=False, metadata={"help": "tiny run (seconds) to check the pipeline"})


SMOKE = dict(smoke=True, users="2", seconds=4.0, repeats=1, limit_requests=64, npz_users=2, warmup_seconds=0.0)


# ---------------------------------------------------------------- servers


class LitServePeer:
    """loadtests/litserve_peer.py in its own process group on a free port."""

    def __init__(self, run_dir: str, workdir: Path):
        from loadtests.torchserve_process import free_port

        self.port, self.run_dir, self.workdir = free_port(), run_dir, workdir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "LitServePeer":
        self.log = open(self.workdir / "litserve.out", "wb")
        cmd = [sys.executable, "-m", "loadtests.litserve_peer", "--run-dir", self.run_dir, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LitServe exited: {(self.workdir / 'litserve.out').read_text()[-2000:]}")
            try:
                if requests.post(f"{self.url}/predict", json={"texts": ["ping"]}, timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("LitServe not ready")

    def stop(self) -> None:
        # uvicorn and LitServe's inference worker are children in the same group: end the group.
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        self.log.close()


@contextmanager
def paused(servers: list):
    """SIGSTOP the other servers while one is measured: LitServe's batching loop polls its queue every
    millisecond even when idle, which would take CPU from whichever server is under load."""
    groups = [s.proc.pid for s in servers if getattr(s, "proc", None) is not None]
    for pid in groups:
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in groups:
            os.killpg(pid, signal.SIGCONT)


# ---------------------------------------------------------------- measurements


def served_threads() -> tuple[int, int]:
    """(workers, torch threads per worker) as TorchServe runs them: the serving settings and the handler's rule."""
    return SETTINGS.workers, SETTINGS.threads_per_worker()


def _limit_worker(run_dir: str, threads: int, batches: list[list[bytes]], fmt: str, barrier) -> tuple[float, float]:
    """One in-process 'worker': load, warm up, wait for the others, encode its share; (start, end) wall times."""
    from gru_encoder.service import EncoderService

    torch.set_num_threads(threads)
    limits = Limits.from_settings(SETTINGS)
    service = EncoderService(load_encoder(run_dir), limits, "cpu")
    formats = [fmt] * max(len(b) for b in batches)
    service.handle(batches[0], formats[: len(batches[0])])  # warm up
    barrier.wait()
    start = time.time()
    for batch in batches:
        replies = service.handle(batch, formats[: len(batch)])
        assert all(status == 200 for status, _ in replies), replies[0]
    return start, time.time()


def measure_limit(cfg: BenchConfig, texts: list[str], fmt: str = "json") -> dict:
    """texts/s of EncoderService.handle (parse, tokenize, one packed forward, serialize) on server batches of
    batch_size requests of the locust mix, laid out as served (workers processes x their torch threads),
    without HTTP: the ceiling of the served configuration on this machine."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    workers, threads = served_threads()
    mix = request_mix(texts, cfg.limit_requests, seed=1)
    bodies = [orjson.dumps(body) for _, body in mix]  # bytes, as a client sends them
    n_texts = sum(len(body["texts"]) for _, body in mix)
    size = SETTINGS.batch_size
    batches = [bodies[i : i + size] for i in range(0, len(bodies), size)]
    ctx = mp.get_context("spawn")  # a fresh torch per process: no forked OpenMP state
    runs = []
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool, ctx.Manager() as manager:
        for _ in range(cfg.repeats):
            barrier = manager.Barrier(workers)
            shares = [batches[w::workers] for w in range(workers)]
            futures = [pool.submit(_limit_worker, str(ROOT / cfg.run_dir), threads, share, fmt, barrier) for share in shares]
            spans = [f.result() for f in futures]
            runs.append(n_texts / (max(end for _, end in spans) - min(start for start, _ in spans)))
    return {"texts_per_s": statistics.median(runs), "runs": runs, "batch_size": size, "workers": workers, "threads": threads}


def run_locust(url: str, users: int, seconds: float, workdir: Path, *, path: str = "", npz: bool = False, kinds: str = "") -> dict:
    """One headless locust run (own process); figures from its CSV and the locustfile's extra stats."""
    tag = f"{'peer' if path else 'ts'}-{users}-{'npz' if npz else 'json'}-{time.monotonic_ns()}"
    prefix, extra = workdir / tag, workdir / f"{tag}-extra.json"
    cmd = [
        str(VENV_BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s", "-H", url, "--reset-stats",
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--extra-stats", str(extra),
        "--max-fail-ratio", "1", "--max-p95-ms", "1e9",  # the bench reports; it does not judge one run
    ]
    cmd += ["--path", path] if path else []
    cmd += ["--npz"] if npz else []
    cmd += ["--kinds", kinds] if kinds else []
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"locust failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = {row["Name"]: row for row in csv.DictReader(open(f"{prefix}_stats.csv"))}
    if not int(rows["Aggregated"]["Request Count"]):  # percentiles are "N/A": say why instead of a ValueError
        raise RuntimeError(f"locust sent no request in {seconds:g}s against {url} (machine too busy?):\n{proc.stderr[-2000:]}")
    total, one = rows["Aggregated"], rows.get("one text")
    ext = json.loads(extra.read_text())
    n = int(total["Request Count"])
    rps = float(total["Requests/s"])
    texts_per_request = ext["texts"] / ext["requests"] if ext["requests"] else 0.0
    return {
        "requests": n,
        "failures": int(total["Failure Count"]),
        "req_per_s": rps,
        "texts_per_s": rps * texts_per_request * (1 - int(total["Failure Count"]) / max(n, 1)),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "one_text_p50_ms": float(one["50%"]) if one and int(one["Request Count"]) else None,
        "mean_server_batch": ext["batch_size_sum"] / ext["requests"] if ext["requests"] else 0.0,
        "mean_response_bytes": ext["bytes"] / ext["requests"] if ext["requests"] else 0.0,
    }


def median_cell(runs: list[dict]) -> dict:
    """Median of every figure over the repeats (failures: summed)."""
    out = {k: statistics.median([r[k] for r in runs if r[k] is not None]) if any(r[k] is not None for r in runs) else None for k in runs[0]}
    out["failures"] = sum(r["failures"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["repeats"] = len(runs)
    return out


# ---------------------------------------------------------------- reporting


def table(results: dict) -> str:
    """The Markdown table printed and written to results.md."""
    limit = results["limit"]["texts_per_s"]
    lines = [
        f"limit (in-process, batches of {results['limit']['batch_size']} requests, {results['limit']['workers']} processes x "
        f"{results['limit']['threads']} torch threads, as served): "
        f"**{limit:.0f} texts/s** (JSON)" + (f", {results['limit_npz']['texts_per_s']:.0f} texts/s (.npz)" if results.get("limit_npz") else ""),
        "",
        "| server | users | req/s | texts/s | p50 ms | p95 ms | p99 ms | 1-text p50 ms | fails | server batch | /limit | /peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server, cells in results["servers"].items():
        for users, c in cells.items():
            peer = results["servers"].get("litserve", {}).get(users)
            ratio_peer = f"{c['texts_per_s'] / peer['texts_per_s']:.2f}x" if server == "torchserve" and peer else ""
            lines.append(
                f"| {server} | {users} | {c['req_per_s']:.1f} | {c['texts_per_s']:.0f} | {c['p50_ms']:.0f} | {c['p95_ms']:.0f} | "
                f"{c['p99_ms']:.0f} | {c['one_text_p50_ms'] if c['one_text_p50_ms'] is not None else '-'} | {c['failures']} | "
                f"{c['mean_server_batch']:.2f} | {c['texts_per_s'] / limit:.0%} | {ratio_peer} |"
            )
    if results.get("formats"):
        lines += ["", f"Large outputs (8-32 texts with `output`), TorchServe, {results['formats']['users']} users:", "",
                  "| format | req/s | texts/s | p50 ms | p99 ms | mean body KB | client decode ms |", "|---|---|---|---|---|---|---|"]
        for fmt in ("json", "npz"):
            c = results["formats"][fmt]
            lines.append(f"| {fmt} | {c['req_per_s']:.1f} | {c['texts_per_s']:.0f} | {c['p50_ms']:.0f} | {c['p99_ms']:.0f} | "
                         f"{c['mean_response_bytes'] / 1e3:.0f} | {c['decode_ms']:.2f} |")
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for server, cells in results["servers"].items():
        users = [int(u) for u in cells]
        ax1.plot(users, [c["texts_per_s"] for c in cells.values()], marker="o", label=server)
        ax2.plot(users, [c["p99_ms"] for c in cells.values()], marker="o", label=f"{server} p99")
        ax2.plot(users, [c["p50_ms"] for c in cells.values()], marker=".", linestyle="--", label=f"{server} p50")
    ax1.axhline(results["limit"]["texts_per_s"], color="gray", linestyle=":", label="in-process limit")
    ax1.set(xscale="log", xlabel="concurrent users", ylabel="texts/s", title="throughput (median of repeats)")
    ax2.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="ms", title="latency")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def decode_ms(url: str, fmt: str, texts: list[str]) -> float:
    """What a client spends turning one large response into numpy arrays (median of 20)."""
    import random

    body = make_body("8-32 texts", texts, random.Random(3))
    accept = "application/x-npz" if fmt == "npz" else "application/json"
    raw = requests.post(url, json=body, headers={"Accept": accept}, timeout=30).content
    times = []
    for _ in range(20):
        start = time.perf_counter()
        if fmt == "npz":
            arrays = np.load(io.BytesIO(raw))
            _ = arrays["output"], arrays["hidden"]
        else:
            data = orjson.loads(raw)
            _ = np.asarray(data["output"], np.float32), np.asarray(data["hidden"], np.float32)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------- main


def bench(cfg: BenchConfig) -> dict:
    """Run everything; returns the results written to results.json."""
    from loadtests.torchserve_process import TorchServe

    users = [int(u) for u in cfg.users.split(",")]
    servers = [s for s in cfg.servers.split(",") if s]
    out = ROOT / cfg.out_dir / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if cfg.smoke else ""))
    out.mkdir(parents=True)
    texts = held_out_texts()
    results: dict = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
                     "serving_settings": dataclasses.asdict(SETTINGS)}
    print(f"load average before: {os.getloadavg()}; {len(texts)} held-out texts", flush=True)

    results["limit"] = measure_limit(cfg, texts)
    print(f"limit: {results['limit']['texts_per_s']:.0f} texts/s", flush=True)
    if cfg.npz_users:
        results["limit_npz"] = measure_limit(cfg, texts, "npz")

    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        tmp = Path(tmp)
        started: dict = {}  # the servers this run started (and stops), by name
        urls: dict = {}
        try:
            if "torchserve" in servers:
                if cfg.torchserve_url:
                    urls["torchserve"] = (cfg.torchserve_url, "")
                else:
                    (tmp / "ts").mkdir()
                    ts = TorchServe((ROOT / cfg.model_store).resolve(), tmp / "ts").start()
                    started["torchserve"] = ts
                    urls["torchserve"] = (ts.url, "")
            if "litserve" in servers:
                (tmp / "peer").mkdir()
                peer = LitServePeer(cfg.run_dir, tmp / "peer").start()
                started["litserve"] = peer
                urls["litserve"] = (peer.url, "/predict")
            for url, path in urls.values() if cfg.warmup_seconds else ():  # warm up every server alike
                run_locust(url, max(users), cfg.warmup_seconds, tmp, path=path)
            runs: dict = {s: {u: [] for u in users} for s in urls}
            for rep in range(cfg.repeats):  # interleaved: a noisy minute hurts every server alike
                for u in users:
                    for server, (url, path) in urls.items():
                        with paused([s for name, s in started.items() if name != server]):
                            cell = run_locust(url, u, cfg.seconds, tmp, path=path)
                        runs[server][u].append(cell)
                        print(f"  repeat {rep + 1}/{cfg.repeats} {server:10s} {u:3d} users: {cell['req_per_s']:7.1f} req/s "
                              f"{cell['texts_per_s']:7.0f} texts/s p50 {cell['p50_ms']:.0f} p99 {cell['p99_ms']:.0f} ms "
                              f"fails {cell['failures']} batch {cell['mean_server_batch']:.2f}", flush=True)
            results["servers"] = {s: {str(u): median_cell(r) for u, r in cells.items()} for s, cells in runs.items()}
            results["runs"] = {s: {str(u): r for u, r in cells.items()} for s, cells in runs.items()}
            if cfg.npz_users and "torchserve" in urls:
                url = urls["torchserve"][0]
                fmts = {}
                with paused([s for name, s in started.items() if name != "torchserve"]):
                    for fmt in ("json", "npz"):
                        cells = [run_locust(url, cfg.npz_users, cfg.seconds, tmp, npz=fmt == "npz", kinds="8-32 texts") for _ in range(cfg.repeats)]
                        fmts[fmt] = {**median_cell(cells), "decode_ms": decode_ms(f"{url}/predictions/gru_encoder", fmt, texts)}
                results["formats"] = {"users": cfg.npz_users, **fmts}
        finally:
            for server in started.values():
                server.stop()
    # The limit again at the end: the load of this machine drifts over minutes; quote the median of both.
    for key, fmt in (("limit", "json"), ("limit_npz", "npz")) if not cfg.smoke else ():
        if key in results:
            again = measure_limit(cfg, texts, fmt)
            runs = results[key]["runs"] + again["runs"]
            results[key].update(runs=runs, texts_per_s=statistics.median(runs))
    results["machine"]["load_after"] = os.getloadavg()
    md = table(results)
    print("\n" + md + f"\n\nload average before {results['machine']['load_before']}, after {results['machine']['load_after']}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(f"# Benchmark {out.name}\n\n{md}\n\nload average before "
                                    f"{results['machine']['load_before']}, after {results['machine']['load_after']}\n")
    chart(results, out / "chart.png")
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}/ (results.json, results.md, chart.png)")
    results["out"] = str(out)
    return results


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    bench(config_from_args(BenchConfig, argv, presets={"smoke": SMOKE}))


if __name__ == "__main__":
    main()
