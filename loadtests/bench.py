"""One benchmark run: the in-process limit, TorchServe and two peers (LitServe, Ray Serve), same machine, same texts.

    make bench                                   # bench-tools (wrk), archive, then the full run (~20 min on 2 cores)
    .venv/bin/python -m loadtests.bench --help   # every flag, generated from BenchConfig
    .venv/bin/python -m loadtests.bench --smoke  # about a minute; the tests run it

1. limit: EncoderService.handle (parse, tokenize, one packed forward, serialize) in this process, on
   server batches of `batch_size` requests of the locust mix: texts/s and CPU seconds per text, no HTTP.
2. torchserve: the real .mar on free ports; litserve and rayserve (loadtests/peers.py): the same
   EncoderService with the same batching, workers and threads. Each is loaded by locust (headless, its
   own process) at each user count, and by wrk with one-text requests at `wrk_users` connections.
3. For every cell, read from /proc while it runs: the server's CPU (every process of it: frontend and
   workers), the load generator's and the rest of the machine's, so that CPU per text can be set beside
   the in-process cost and a busy machine is visible in the figures themselves.
Each cell is run `repeats` times, interleaved across servers (the others are SIGSTOPped meanwhile), and
reported as median (min-max). Then JSON and .npz responses are compared on TorchServe for large outputs.
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

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.host.config_cli import config_from_args
from gru_encoder.host.settings import ServingSettings
from loadtests import bench_report, wrk
from loadtests.cpu import Sampler, tree
from loadtests.workload import ROOT, held_out_texts, make_body, request_mix

VENV_BIN = Path(sys.executable).parent
SETTINGS = ServingSettings.from_env()  # what TorchServe and the peers are started with


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark the served encoder against its in-process limit and two peers (LitServe, Ray Serve)."""

    run_dir: str = field(default="runs/default", metadata={"help": "trained run (limit and peers load it)"})
    model_store: str = field(default="model_store", metadata={"help": "folder holding gru_encoder.mar (make archive)"})
    users: str = field(default="1,8,32,64", metadata={"help": "locust user counts (closed loop, no think time)"})
    seconds: float = field(default=12.0, metadata={"help": "measured seconds per (server, users) cell"})
    repeats: int = field(default=3, metadata={"help": "runs per cell, interleaved; median (min-max) reported"})
    servers: str = field(default="torchserve,litserve,rayserve", metadata={"help": "which servers to load"})
    wrk_users: str = field(default="1,32", metadata={"help": "wrk connections for the one-text cross-check; empty = skip"})
    limit_requests: int = field(default=1600, metadata={"help": "requests of the mix replayed in-process per repeat"})
    npz_users: int = field(default=8, metadata={"help": "users for the JSON vs .npz comparison; 0 = skip it"})
    warmup_seconds: float = field(default=20.0, metadata={
        "help": "locust load on each server before measuring (JIT, caches), split over the user counts, most users first"})
    torchserve_url: str = field(default="", metadata={"help": "load this running TorchServe instead of starting one"})
    out_dir: str = field(default="loadtests/results", metadata={"help": "a <timestamp>/ folder is written here"})
    smoke: bool = field(default=False, metadata={"help": "tiny run (about a minute) to check the pipeline"})


SMOKE = dict(smoke=True, users="2", seconds=6.0, repeats=1, limit_requests=64, npz_users=2, warmup_seconds=0.0, wrk_users="1")


# ---------------------------------------------------------------- servers


@dataclass
class Served:
    """A server under test: where to send requests, which process tree to read CPU from, what to pause."""

    name: str
    url: str
    path: str  # request path ("" = locust's default, /predictions/gru_encoder)
    pid: int  # root of the server's process tree (TorchServe: the launcher; a given URL: the listening process)
    ours: bool  # started by this run: paused while another server is measured


def listening_pid(url: str) -> int:
    """The pid listening on a running server's port (its CPU is read from that process tree)."""
    import psutil

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise RuntimeError(f"no process of this machine listens on port {port} ({url}): the bench reads server CPU from /proc")


@contextmanager
def paused(servers: list[Served]):
    """SIGSTOP the other servers while one is measured: LitServe's batching loop polls its queue every
    millisecond even when idle and Ray's daemons tick (0.08 cores idle), which would take CPU from the
    server under load. Every process of each tree: Ray's actors run in sessions of their own."""
    pids = [pid for s in servers if s.ours for pid in tree(s.pid)]
    for pid in pids:
        _signal(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            _signal(pid, signal.SIGCONT)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited meanwhile (a worker restarting)
        pass


# ---------------------------------------------------------------- measurements


def served_threads() -> tuple[int, int]:
    """(workers, torch threads per worker) as TorchServe runs them: the serving settings and the handler's rule."""
    return SETTINGS.workers, SETTINGS.threads_per_worker()


def _limit_worker(run_dir: str, threads: int, batches: list[list[bytes]], fmt: str, barrier) -> tuple[float, float, float]:
    """One in-process 'worker': load, warm up, wait for the others, encode its share; (start, end) wall
    times and the CPU seconds this process spent on its share (all its threads)."""
    from gru_encoder.api.service import EncoderService

    torch.set_num_threads(threads)
    limits = SETTINGS.limits()
    service = EncoderService(load_encoder(run_dir), limits, "cpu")
    formats = [fmt] * max(len(b) for b in batches)
    service.handle(batches[0], formats[: len(batches[0])])  # warm up
    barrier.wait()
    start, cpu = time.time(), time.process_time()
    for batch in batches:
        replies = service.handle(batch, formats[: len(batch)])
        assert all(status == 200 for status, _ in replies), replies[0]
    return start, time.time(), time.process_time() - cpu


def measure_limit(cfg: BenchConfig, bodies: list[dict], batch_size: int = SETTINGS.batch_size, fmt: str = "json") -> dict:
    """texts/s and CPU per text of EncoderService.handle (parse, tokenize, one packed forward, serialize) on
    server batches of `batch_size` of these request bodies, laid out as served (workers processes x their
    torch threads), without HTTP: the ceiling of the served configuration on this machine, and what
    serving a text costs before any server adds its own."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    workers, threads = served_threads()
    raw = [orjson.dumps(body) for body in bodies]  # bytes, as a client sends them
    n_texts = sum(len(body["texts"]) for body in bodies)
    batches = [raw[i : i + batch_size] for i in range(0, len(raw), batch_size)]
    ctx = mp.get_context("spawn")  # a fresh torch per process: no forked OpenMP state
    runs, cpu_runs = [], []
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool, ctx.Manager() as manager:
        for _ in range(cfg.repeats):
            barrier = manager.Barrier(workers)
            shares = [batches[w::workers] for w in range(workers)]
            futures = [pool.submit(_limit_worker, str(ROOT / cfg.run_dir), threads, share, fmt, barrier) for share in shares]
            spans = [f.result() for f in futures]
            runs.append(n_texts / (max(end for _, end, _ in spans) - min(start for start, _, _ in spans)))
            cpu_runs.append(1e3 * sum(cpu for _, _, cpu in spans) / n_texts)
    return {"texts_per_s": statistics.median(runs), "runs": runs, "cpu_ms_per_text": statistics.median(cpu_runs),
            "cpu_runs": cpu_runs, "batch_size": batch_size, "workers": workers, "threads": threads}


def cpu_figures(rates: dict, texts_per_s: float) -> dict:
    """The /proc figures of one cell: server CPU per text (and by role), cores of the load generator and the rest."""
    out = {
        "server_cpu_ms_per_text": 1e3 * rates["server"] / texts_per_s if texts_per_s else None,
        "server_cores": rates["server"],
        "loadgen_cores": rates["loadgen"],
        "other_cores": max(0.0, rates["machine"] - rates["server"] - rates["loadgen"]),
    }
    for part in ("frontend", "worker", "other"):
        out[f"server_{part}_cores"] = rates.get(f"server.{part}", 0.0)
    return out


def run_locust(server: Served, users: int, seconds: float, workdir: Path, *, npz: bool = False, kinds: str = "") -> dict:
    """One headless locust run (own process), with the server's and locust's CPU sampled from /proc."""
    tag = f"{server.name}-{users}-{'npz' if npz else 'json'}-{time.monotonic_ns()}"
    prefix, extra = workdir / tag, workdir / f"{tag}-extra.json"
    cmd = [
        str(VENV_BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s", "-H", server.url, "--reset-stats",
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--extra-stats", str(extra),
        "--max-fail-ratio", "1", "--max-p95-ms", "1e9",  # the bench reports; it does not judge one run
    ]
    cmd += ["--path", server.path] if server.path else []
    cmd += ["--npz"] if npz else []
    cmd += ["--kinds", kinds] if kinds else []
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with Sampler({"server": server.pid, "loadgen": proc.pid}) as sampler:
        try:
            _, stderr = proc.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"locust failed ({proc.returncode}):\n{stderr[-3000:]}")
    rows = {row["Name"]: row for row in csv.DictReader(open(f"{prefix}_stats.csv"))}
    if not int(rows["Aggregated"]["Request Count"]):  # percentiles are "N/A": say why instead of a ValueError
        raise RuntimeError(f"locust sent no request in {seconds:g}s against {server.url} (machine too busy?):\n{stderr[-2000:]}")
    total, one = rows["Aggregated"], rows.get("one text")
    ext = json.loads(extra.read_text())
    n = int(total["Request Count"])
    rps = float(total["Requests/s"])
    texts_per_request = ext["texts"] / ext["requests"] if ext["requests"] else 0.0
    texts_per_s = rps * texts_per_request * (1 - int(total["Failure Count"]) / max(n, 1))
    return {
        "requests": n,
        "failures": int(total["Failure Count"]),
        "req_per_s": rps,
        "texts_per_s": texts_per_s,
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "one_text_p50_ms": float(one["50%"]) if one and int(one["Request Count"]) else None,
        "mean_server_batch": ext["batch_size_sum"] / ext["requests"] if ext["requests"] else 0.0,
        "mean_response_bytes": ext["bytes"] / ext["requests"] if ext["requests"] else 0.0,
        # CPU over locust's measured window (after spawning, until it stopped), not its start-up.
        **cpu_figures(sampler.rates(ext["t_start"], ext["t_stop"]), texts_per_s),
    }


def run_wrk(server: Served, connections: int, seconds: float, lua: Path) -> dict:
    """One wrk run of one-text requests, with the server's and wrk's CPU sampled from /proc."""
    path = server.path or "/predictions/gru_encoder"
    proc = wrk.start(server.url, path, connections, seconds, lua)
    with Sampler({"server": server.pid, "loadgen": proc.pid}) as sampler:
        figures = wrk.figures(wrk.finish(proc, seconds + 120))
    return {**figures, **cpu_figures(sampler.rates(), figures["texts_per_s"])}


def merge_limit(first: dict, again: dict) -> dict:
    """One limit from the runs before and after the servers' cells: medians over both."""
    runs, cpu = first["runs"] + again["runs"], first["cpu_runs"] + again["cpu_runs"]
    return {**first, "runs": runs, "cpu_runs": cpu, "texts_per_s": statistics.median(runs), "cpu_ms_per_text": statistics.median(cpu)}


def summarize(runs: list[dict]) -> dict:
    """Median of every figure over the repeats, with its (min, max) in "range"; failures and requests summed."""
    keys = [k for k in runs[0] if all(isinstance(r.get(k), (int, float)) for r in runs)]
    out: dict = {k: statistics.median(r[k] for r in runs) for k in keys}
    out.update({k: None for k in runs[0] if k not in keys})
    out["range"] = {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in keys}
    out["failures"] = sum(r["failures"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["repeats"] = len(runs)
    return out


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


def start_servers(cfg: BenchConfig, names: list[str], tmp: Path, started: list) -> list[Served]:
    """Start (or find) every server to load; `started` collects what this run must stop."""
    from loadtests.peers import PeerServer
    from loadtests.torchserve_process import TorchServe

    served = []
    for name in names:
        if name == "torchserve" and cfg.torchserve_url:
            served.append(Served(name, cfg.torchserve_url, "", listening_pid(cfg.torchserve_url), False))
            continue
        (tmp / name).mkdir()
        if name == "torchserve":
            server = TorchServe((ROOT / cfg.model_store).resolve(), tmp / name).start()
            started.append(server)
            served.append(Served(name, server.url, "", server.proc.pid, True))
        else:
            server = PeerServer(name, cfg.run_dir, tmp / name).start()
            started.append(server)
            served.append(Served(name, server.url, server.path, server.proc.pid, True))
        print(f"{name} ready at {served[-1].url}", flush=True)
    return served


def bench(cfg: BenchConfig) -> dict:
    """Run everything; returns the results written to results.json."""
    users = [int(u) for u in cfg.users.split(",")]
    wrk_users = [int(u) for u in cfg.wrk_users.split(",") if u]
    names = [s for s in cfg.servers.split(",") if s]
    if wrk_users and not wrk.available():
        raise SystemExit(wrk.INSTALL_HINT + " (or --wrk-users '' to skip the cross-check)")
    out = ROOT / cfg.out_dir / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if cfg.smoke else ""))
    out.mkdir(parents=True)
    texts = held_out_texts()
    results: dict = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
                     "serving_settings": dataclasses.asdict(SETTINGS)}
    print(f"load average before: {os.getloadavg()}; {len(texts)} held-out texts", flush=True)

    mix = [body for _, body in request_mix(texts, cfg.limit_requests, seed=1)]
    one_text = [orjson.loads(b) for b in wrk.one_text_bodies(texts, cfg.limit_requests)]
    limits = {"limit": lambda: measure_limit(cfg, mix)}
    if cfg.npz_users:
        limits["limit_npz"] = lambda: measure_limit(cfg, mix, fmt="npz")
    if wrk_users:
        limits["limit_one_text"] = lambda: {"batched": measure_limit(cfg, one_text), "solo": measure_limit(cfg, one_text, batch_size=1)}
    for key, measure in limits.items():
        results[key] = measure()
    print(f"limit: {results['limit']['texts_per_s']:.0f} texts/s, {results['limit']['cpu_ms_per_text']:.3f} ms CPU per text", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        tmp = Path(tmp)
        started: list = []
        try:
            servers = start_servers(cfg, names, tmp, started)
            # Warm up every server alike, at every user count of the run: Java's JIT compiles TorchServe's
            # frontend for 15-30 s under load, and again for the code paths a lone caller takes.
            for server in servers if cfg.warmup_seconds else ():
                with paused([s for s in servers if s is not server]):
                    for u in sorted(users, reverse=True):
                        run_locust(server, u, cfg.warmup_seconds / len(users), tmp)
            scripts = {}  # each server's wrk script (same bodies, its own path)
            for server in servers if wrk_users else ():
                (tmp / server.name).mkdir(exist_ok=True)
                scripts[server.name] = wrk.script(tmp / server.name, server.path or "/predictions/gru_encoder", wrk.one_text_bodies(texts))
            runs: dict = {s.name: {u: [] for u in users} for s in servers}
            wrk_runs: dict = {s.name: {c: [] for c in wrk_users} for s in servers}
            for rep in range(cfg.repeats):  # interleaved: a noisy minute hurts every server alike
                for u in users:
                    for server in servers:
                        with paused([s for s in servers if s is not server]):
                            cell = run_locust(server, u, cfg.seconds, tmp)
                        runs[server.name][u].append(cell)
                        print(f"  repeat {rep + 1}/{cfg.repeats} {server.name:10s} {u:3d} users: {cell['texts_per_s']:7.0f} texts/s "
                              f"p50 {cell['p50_ms']:.0f} p99 {cell['p99_ms']:.0f} ms fails {cell['failures']} "
                              f"batch {cell['mean_server_batch']:.2f} server CPU {cell['server_cpu_ms_per_text'] or 0:.3f} ms/text "
                              f"locust {cell['loadgen_cores']:.2f} others {cell['other_cores']:.2f} cores", flush=True)
                for c in wrk_users:
                    for server in servers:
                        with paused([s for s in servers if s is not server]):
                            cell = run_wrk(server, c, cfg.seconds, scripts[server.name])
                        wrk_runs[server.name][c].append(cell)
                        print(f"  repeat {rep + 1}/{cfg.repeats} {server.name:10s} wrk {c:3d} connections: {cell['req_per_s']:7.0f} req/s "
                              f"p50 {cell['p50_ms']:.2f} p99 {cell['p99_ms']:.1f} ms fails {cell['failures']} "
                              f"server CPU {cell['server_cpu_ms_per_text'] or 0:.3f} ms/request wrk {cell['loadgen_cores']:.3f} cores", flush=True)
            results["servers"] = {s: {str(u): summarize(r) for u, r in cells.items()} for s, cells in runs.items()}
            results["runs"] = {s: {str(u): r for u, r in cells.items()} for s, cells in runs.items()}
            if wrk_users:
                results["wrk"] = {s: {str(c): summarize(r) for c, r in cells.items()} for s, cells in wrk_runs.items()}
                results["wrk_runs"] = {s: {str(c): r for c, r in cells.items()} for s, cells in wrk_runs.items()}
            ts = next((s for s in servers if s.name == "torchserve"), None)
            if cfg.npz_users and ts:
                fmts = {}
                with paused([s for s in servers if s is not ts]):
                    for fmt in ("json", "npz"):
                        cells = [run_locust(ts, cfg.npz_users, cfg.seconds, tmp, npz=fmt == "npz", kinds="8-32 texts") for _ in range(cfg.repeats)]
                        fmts[fmt] = {**summarize(cells), "decode_ms": decode_ms(f"{ts.url}/predictions/gru_encoder", fmt, texts)}
                results["formats"] = {"users": cfg.npz_users, **fmts}
        finally:
            for server in started:
                server.stop()
    # The limit again at the end: the load of this machine drifts over minutes; quote the median of both.
    for key, measure in limits.items() if not cfg.smoke else ():
        again = measure()
        both = results[key]
        results[key] = {k: merge_limit(both[k], again[k]) for k in again} if key == "limit_one_text" else merge_limit(both, again)
    results["machine"]["load_after"] = os.getloadavg()
    md = bench_report.markdown(results)
    print("\n" + md)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(f"# Benchmark {out.name}\n\n{md}\n")
    bench_report.chart(results, out / "chart.png")
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}/ (results.json, results.md, chart.png)")
    results["out"] = str(out)
    return results


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    bench(config_from_args(BenchConfig, argv, presets={"smoke": SMOKE}))


if __name__ == "__main__":
    main()
