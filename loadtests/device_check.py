"""The served encode path on one device (a GPU): its answers against the CPU's, its speed and memory by batch size.

    python -m loadtests.device_check --device cuda --out results/gpu      # a GPU machine: one run, under 5 minutes
    python -m loadtests.device_check --device cpu --batch-sizes 1,4,16    # anywhere, in seconds (make check runs it)
    python -m loadtests.device_check --replot results/gpu/results.json   # draw chart.png from a run's figures

It runs the code the TorchServe handler runs, not a copy: gru_encoder.api.router.Router (what the handler
hands each server batch to) over an EncoderService on the device, i.e. parse_body, tokenize, one packed
forward pass, the JSON and .npz writers. Three parts, all written to <out>/results.json:

- correctness: a fixed set of requests (the load's mix, plus a truncated text, unknown words, add_eos
  false and an h0) answered on the device and by a second EncoderService on the CPU, as one server
  batch, in JSON and in .npz: ids, tokens and shapes equal, output and hidden within --tolerance (max
  absolute difference measured and stated; on CUDA also with cuDNN's RNN in IEEE fp32 instead of TF32),
  padded positions exactly 0, the JSON and .npz answers the same floats. <out>/answers.npz holds the
  device's answers (tests compare them with the in-process encoder).
- speed: for each batch size (texts in one server batch, drawn from the held-out split with the load's
  request mix, loadtests/workload.py): the model alone (ids to the device, forward, synchronize) and the
  whole path with JSON and with .npz answers, ms per batch (median, min, max) and texts/s, with the whole
  path split into parse, tokenize, forward (pad, the forward pass, copy back, split) and serialize.
- memory at each batch size (CUDA: the allocator's peaks; CPU: the process's RSS) and a recommendation
  for the GPU overlay: texts per server batch, TorchServe's batch_size (requests) and workers.

`--torchserve` adds a fourth part where Java, TorchServe, the archiver and locust are installed: the
archive served by TorchServe (python -m gru_encoder.host.serve, the GPU when TorchServe finds one) with
the recommended settings, loaded by loadtests/loadgen.py for --torchserve-seconds. The exit status is 1
when the correctness part fails (after every file is written), else 0.
"""

from __future__ import annotations

import sys

_STARTUP_MODULES = set(sys.modules)  # what the interpreter had before this check imported anything

import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import torch  # noqa: E402

from gru_encoder.api.contract import Encoded  # noqa: E402
from gru_encoder.api.router import Router  # noqa: E402
from gru_encoder.api.schema import Limits  # noqa: E402
from gru_encoder.api.service import EncoderService, parse_body  # noqa: E402
from gru_encoder.core.artifacts import load_encoder  # noqa: E402
from gru_encoder.core.model import pad_batch  # noqa: E402
from gru_encoder.host.config_cli import config_from_args  # noqa: E402
from gru_encoder.host.settings import ServingSettings  # noqa: E402
from loadtests.workload import ROOT, held_out_texts, request_mix  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # the device machine may lack it: no progress bar then
    def tqdm(items, **_):  # type: ignore[no-redef]
        return items

SETTINGS = ServingSettings()  # the defaults, not this machine's GRU_ENCODER_* variables
OWN_PACKAGES = {"gru_encoder", "loadtests", "training", "handlers"}  # this repository's, travelling with it
PATHS = ("model", "json", "npz")  # the model alone; the whole path with JSON answers; with .npz answers


@dataclass(frozen=True)
class DeviceCheckConfig:
    """Run the served encode path on one device: correctness against the CPU, speed and memory by batch size."""

    device: str = field(default="auto", metadata={"help": "cuda, cuda:N, cpu, or auto (cuda when available)"})
    run_dir: str = field(default="runs/default", metadata={"help": "the run folder (config.json, weights, vocab)"})
    out: str = field(default="", metadata={"help": "output folder (default: loadtests/results/device-<UTC time>)"})
    batch_sizes: str = field(default="1,4,16,64,256,1024,4096", metadata={"help": "texts per server batch, comma-separated"})
    correctness_requests: int = field(default=48, metadata={"help": "requests of the load's mix in the correctness set"})
    tolerance: float = field(default=1e-4, metadata={"help": "largest absolute difference allowed between device and CPU floats"})
    seconds_per_cell: float = field(default=1.0, metadata={"help": "time spent on each batch size and path, after one warm-up"})
    min_repeats: int = field(default=3, metadata={"help": "repeats of each cell at least"})
    max_repeats: int = field(default=50, metadata={"help": "repeats of each cell at most"})
    latency_budget_ms: float = field(default=100.0, metadata={"help": "the recommended server batch answers within this (whole path, JSON)"})
    # The GPU overlay's CPU request (deploy/kubernetes/overlays/gpu/torchserve-gpu.yaml): workers beyond it
    # would share cores for their host work.
    pod_cpus: int = field(default=4, metadata={"help": "CPUs of a GPU pod (the overlay's request): the most workers recommended"})
    torch_threads: int = field(default=0, metadata={"help": "torch's CPU threads (0: torch's default, all cores); 1 steadies a shared machine's figures"})
    seed: int = 0
    chart: bool = field(default=True, metadata={"help": "draw chart.png (needs matplotlib; skipped with a note without it)"})
    replot: str = field(default="", metadata={"help": "only draw chart.png beside this results.json, then exit"})
    torchserve: bool = field(default=False, metadata={"help": "also serve the archive with TorchServe and load it (needs Java, TorchServe, locust)"})
    torchserve_seconds: float = field(default=60.0, metadata={"help": "how long the load generator loads TorchServe"})
    torchserve_users: int = field(default=32, metadata={"help": "the load generator's users (closed loop)"})

    def __post_init__(self) -> None:
        if not 1 <= self.min_repeats <= self.max_repeats:
            raise ValueError(f"--min-repeats {self.min_repeats} and --max-repeats {self.max_repeats}: need 1 <= min <= max")
        if self.tolerance < 0 or self.correctness_requests < 1:
            raise ValueError("--tolerance must be >= 0 and --correctness-requests >= 1")
        self.sizes()

    def sizes(self) -> list[int]:
        sizes = [int(s) for s in self.batch_sizes.split(",") if s.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"--batch-sizes {self.batch_sizes!r}: give texts per batch, e.g. 1,4,16")
        return sorted(set(sizes))


# ---------------------------------------------------------------- the device and its figures


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA device here; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rnn_precision() -> str:
    """cuDNN's fp32 math for RNNs: "tf32" (tensor cores, PyTorch's default) or "ieee"."""
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):
        return str(rnn.fp32_precision)
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


@contextmanager
def cudnn_rnn_precision(value: str) -> Iterator[None]:
    """cuDNN's fp32 RNN math set to "tf32" or "ieee" inside the block (the new per-operator flag where this
    torch has it: mixing it with the legacy allow_tf32 is an error in torch >= 2.9)."""
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):
        before = rnn.fp32_precision
        rnn.fp32_precision = value
        try:
            yield
        finally:
            rnn.fp32_precision = before
    else:
        before = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = value == "tf32"
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "device": str(device), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_memory_bytes=props.total_memory, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_rnn_fp32_precision=rnn_precision())
    else:
        cpuinfo = Path("/proc/cpuinfo")
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
        env["device_name"] = names[0].strip() if names else platform.processor()
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None  # a copy of the tree without .git (a GPU machine's)
    return env


def third_party_modules() -> list[str]:
    """Top-level modules this check imported from files outside the standard library and the project: what
    a machine must have installed (or be brought as wheels) to run it."""
    stdlib = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")]
    found = set()
    for name in {name.split(".")[0] for name in set(sys.modules) - _STARTUP_MODULES} - OWN_PACKAGES:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file or name in sys.stdlib_module_names or name.startswith("__"):
            continue  # built in, made at run time (a Cython module's helpers), or __main__ under another name
        path = Path(file).resolve()
        installed = "site-packages" in path.parts or "dist-packages" in path.parts
        if installed or not any(path.is_relative_to(s) for s in stdlib):  # site-packages, or a --target folder
            found.add(name)
    return sorted(found)


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def spread(seconds: list[float]) -> dict[str, float | int]:
    """ms per batch over the repeats."""
    ms = [s * 1e3 for s in seconds]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms)}


def repeat(fn: Callable[[], Any], device: torch.device, cfg: DeviceCheckConfig) -> list[float]:
    """Seconds of fn() per call: one warm-up (cuDNN picks its kernels, allocators grow), then at least
    min_repeats calls and more until seconds_per_cell has passed (max_repeats at most)."""
    fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < cfg.max_repeats and (len(times) < cfg.min_repeats or time.perf_counter() - start < cfg.seconds_per_cell):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------- the requests


def batch_bodies(mix: list[dict], n_texts: int) -> list[dict]:
    """The load mix's requests in order until they hold n_texts texts (the last one cut to fit)."""
    bodies, total = [], 0
    for body in mix:
        take = min(len(body["texts"]), n_texts - total)
        bodies.append({**body, "texts": body["texts"][:take]})
        total += take
        if total == n_texts:
            return bodies
    raise ValueError(f"the mix holds {total} texts, fewer than {n_texts}")


def correctness_bodies(texts: list[str], cfg: DeviceCheckConfig, state_shape: tuple[int, int]) -> list[dict]:
    """The load's mix plus the cases a device could get wrong: truncation at max_length, unknown words,
    add_eos false, and an h0 (which the service moves to the device)."""
    bodies = [body for _, body in request_mix(texts, cfg.correctness_requests, seed=cfg.seed + 1)]
    rng = random.Random(cfg.seed)
    layers_dirs, hidden = state_shape
    h0 = np.random.default_rng(cfg.seed).uniform(-1, 1, (layers_dirs, 2, hidden)).astype(np.float32)
    return bodies + [
        {"texts": [" ".join(rng.sample(texts, 30))], "truncate": True},
        {"texts": ["zxqv blorft wibbling , quuxed !", "i"], "return": ["output", "hidden"]},
        {"texts": [rng.choice(texts)], "add_eos": False},
        {"texts": rng.sample(texts, 2), "h0": h0.tolist()},
    ]


def native_batch(router: Router, bodies: list[bytes], fmt: str) -> list[Any]:
    """One server batch through the handler's router (the native route), as TorchServe hands it bodies."""
    return router.handle(bodies, [None] * len(bodies), [fmt] * len(bodies))


def decode(reply: Any, fmt: str) -> Encoded:
    if reply.status != 200:
        raise AssertionError(f"status {reply.status}: {reply.body[:300]!r}")
    return Encoded.from_npz(reply.body) if fmt == "npz" else Encoded.from_json(orjson.loads(reply.body))


# ---------------------------------------------------------------- correctness


def compare(device_answers: list[Encoded], cpu_answers: list[Encoded]) -> tuple[dict[str, float], list[str]]:
    """Largest absolute differences of output and hidden, and what else differs."""
    diffs = {"output": 0.0, "hidden": 0.0}
    problems = []
    for i, (dev, cpu) in enumerate(zip(device_answers, cpu_answers)):
        if dev.shapes != cpu.shapes:
            problems.append(f"request {i}: shapes {dev.shapes} on the device, {cpu.shapes} on the CPU")
            continue
        if dev.tokens != cpu.tokens or not np.array_equal(dev.ids, cpu.ids) or not np.array_equal(dev.lengths, cpu.lengths) \
                or dev.truncated != cpu.truncated or dev.model != cpu.model:
            problems.append(f"request {i}: tokens, ids, lengths, truncated or model differ")
        for name in diffs:
            a, b = getattr(dev, name), getattr(cpu, name)
            if a is not None:
                diffs[name] = max(diffs[name], float(np.abs(a - b).max()))
    return diffs, problems


def padding_is_zero(answers: list[Encoded]) -> bool:
    return all(not np.any(a.output[i, n:]) for a in answers if a.output is not None for i, n in enumerate(a.lengths.tolist()))


def check_correctness(device_router: Router, cpu_router: Router, bodies: list[dict], cfg: DeviceCheckConfig,
                      device: torch.device) -> tuple[dict[str, Any], list[Encoded]]:
    raw = [orjson.dumps(b) for b in bodies]
    answers: dict[tuple[str, str], list[Encoded]] = {}
    for name, router in (("device", device_router), ("cpu", cpu_router)):
        for fmt in ("json", "npz"):
            replies = native_batch(router, raw, fmt)
            bad = [f"{name} {fmt} request {i}: status {r.status} {r.body[:200]!r}" for i, r in enumerate(replies) if r.status != 200]
            if bad:  # the set is valid by construction: an error here is the path failing
                nothing = dict.fromkeys(("shapes_equal", "ids_tokens_lengths_equal", "padding_exactly_zero", "json_equals_npz"), False)
                return {"ok": False, "tolerance": cfg.tolerance, "max_abs_diff": {"output": None, "hidden": None},
                        "requests": len(bodies), **nothing, "problems": bad}, []
            answers[name, fmt] = [decode(r, fmt) for r in replies]
    problems: list[str] = []
    diffs, differ = compare(answers["device", "json"], answers["cpu", "json"])
    problems += differ
    # Two passes of the same batch, one written as JSON and one as .npz: both writers are exact for float32,
    # so a difference is a writer's bug or a forward pass that is not deterministic (within tolerance: allowed).
    repeat_diffs, npz_differ = compare(answers["device", "npz"], answers["device", "json"])
    json_npz_diff = max(repeat_diffs.values())
    padding_zero = padding_is_zero(answers["device", "json"]) and padding_is_zero(answers["device", "npz"])
    within = all(d <= cfg.tolerance for d in diffs.values())
    if npz_differ or json_npz_diff > cfg.tolerance:
        problems.append(f"the device's JSON and .npz answers differ (floats by {json_npz_diff:.3g}) {npz_differ[:3]}")
    if not padding_zero:
        problems.append("output at padded positions is not exactly 0")
    if not within:
        problems.append(f"device and CPU differ by {max(diffs.values()):.3g}, more than the tolerance {cfg.tolerance:g}")
    result: dict[str, Any] = {
        "ok": not problems, "tolerance": cfg.tolerance, "max_abs_diff": diffs,
        "requests": len(bodies), "texts": sum(len(a.lengths) for a in answers["cpu", "json"]),
        "tokens": int(sum(int(a.lengths.sum()) for a in answers["cpu", "json"])),
        "shapes_equal": not any("shapes" in p for p in differ),
        "ids_tokens_lengths_equal": not any("tokens, ids" in p for p in differ),
        "padding_exactly_zero": padding_zero, "json_equals_npz": not npz_differ and json_npz_diff == 0.0,
        "json_npz_max_abs_diff": json_npz_diff, "problems": problems,
        "compared_with": "EncoderService on the CPU, the same requests as one server batch",
    }
    if device.type == "cuda":
        result["cudnn_rnn_fp32_precision"] = rnn_precision()
        with cudnn_rnn_precision("ieee"):
            ieee = [decode(r, "npz") for r in native_batch(device_router, raw, "npz")]
        result["ieee_max_abs_diff"] = compare(ieee, answers["cpu", "npz"])[0]
    return result, answers["device", "npz"]


def write_answers(path: Path, bodies: list[dict], answers: list[Encoded], state_shape: tuple[int, int]) -> None:
    """The device's answers to the correctness set, text by text: ids (N, T) zero-padded, lengths (N,), h0
    and hidden (L*D, N, H) (h0 zeros where a request gave none), output of the texts whose request asked
    for it packed as (their tokens, D*H), has_output (N,)."""
    if not answers:
        return
    t = max(int(a.lengths.max()) for a in answers)
    ids, h0, has_output, packed = [], [], [], []
    for body, a in zip(bodies, answers):
        ids.append(np.pad(a.ids, ((0, 0), (0, t - a.ids.shape[1]))))
        b = len(a.lengths)
        h0.append(np.asarray(body["h0"], np.float32) if "h0" in body else np.zeros((state_shape[0], b, state_shape[1]), np.float32))
        has_output += [a.output is not None] * b
        if a.output is not None:
            packed += [a.output[i, :n] for i, n in enumerate(a.lengths.tolist())]
    np.savez(path, ids=np.concatenate(ids), lengths=np.concatenate([a.lengths for a in answers]),
             h0=np.concatenate(h0, axis=1), hidden=np.concatenate([a.hidden for a in answers], axis=1),
             output_packed=np.concatenate(packed), has_output=np.asarray(has_output))


# ---------------------------------------------------------------- speed and memory


def memory_snapshot(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
                "device_used_bytes": total - free}
    return {"rss_bytes": rss_bytes(), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_allocated_bytes": None,
            "note": "CPU: this process's RSS after the batch and its high-water mark so far; torch reports no per-batch peak"}


def measure_batch(n: int, mix: list[dict], service: EncoderService, router: Router, device: torch.device,
                  cfg: DeviceCheckConfig) -> dict[str, Any]:
    bodies = batch_bodies(mix, n)
    raw = [orjson.dumps(b) for b in bodies]
    prepared = [service.prepare(parse_body(b, service.limits)) for b in raw]
    ids, lengths = pad_batch([enc.ids for p in prepared for enc in p.encodings])  # (N, T_max), (N,)
    tokens = int(lengths.sum())
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    @torch.inference_mode()
    def model() -> None:
        service.encoder(ids.to(device), lengths)  # output (N, T_max, D*H), hidden (L*D, N, H)

    row: dict[str, Any] = {"batch_size": n, "requests": len(bodies), "tokens": tokens, "padded_tokens": int(ids.numel())}
    times = repeat(model, device, cfg)
    row["model"] = {"ms": spread(times), "texts_per_s": n / statistics.median(times), "tokens_per_s": tokens / statistics.median(times)}
    for fmt in ("json", "npz"):
        stages: list[dict[str, float]] = []
        errors: Counter = Counter()
        sizes: list[int] = []

        def whole_path(fmt: str = fmt) -> None:
            t0 = time.perf_counter()
            replies = native_batch(router, raw, fmt)
            total = time.perf_counter() - t0
            seconds = dict(router.stats.seconds)
            stages.append({"parse": total - sum(seconds.values()), **seconds})
            errors.update(r.status for r in replies if r.status != 200)
            sizes[:] = [sum(len(r.body) for r in replies)]

        times = repeat(whole_path, device, cfg)
        stages = stages[1:]  # not the warm-up's
        row[fmt] = {
            "ms": spread(times), "texts_per_s": n / statistics.median(times),
            "stages_ms": {k: statistics.median(s[k] for s in stages) * 1e3 for k in stages[0]},
            "response_bytes": sizes[0], "errors": {str(k): v for k, v in errors.items()},
        }
    row["memory"] = memory_snapshot(device)
    return row


RULE = ("A worker's batch of N texts costs host time (parse, tokenize, pad, copy, serialize: the whole path's JSON "
        "time less the model's) and device time (the model's). Workers overlap their host time; the device runs one "
        "batch at a time. So W workers answer about min(W * N / whole, N / model) texts/s, and W = whole / model "
        "keeps the device busy, capped by the pod's CPUs and by the device memory a worker takes (the CUDA context "
        "and libraries, measured, plus the allocator's peak at that batch, within 90% of the device). The pick: of "
        "the batch sizes whose whole path answers within the latency budget, the smallest whose estimate is within "
        "5% of the best. TorchServe's batch_size counts requests: N / the mix's texts per request, at most the job "
        "queue's size (the serving settings').")


def recommend(rows: list[dict], cfg: DeviceCheckConfig, texts_per_request: float, gpu_memory: dict[str, int] | None) -> dict[str, Any]:
    """Texts per server batch, TorchServe's batch_size and workers for one GPU (RULE says how); gpu_memory:
    the device's total_bytes and the context_bytes a worker takes beyond its allocator (None on the CPU)."""
    options = []
    for r in rows:
        whole_ms, model_ms = r["json"]["ms"]["median"], r["model"]["ms"]["median"]
        if whole_ms > cfg.latency_budget_ms and r is not rows[0]:
            continue
        workers = max(1, min(cfg.pod_cpus, math.ceil(whole_ms / max(model_ms, 1e-6))))
        by_memory = None
        if gpu_memory is not None:
            by_memory = int(0.9 * gpu_memory["total_bytes"] // (gpu_memory["context_bytes"] + r["memory"]["peak_reserved_bytes"]))
            workers = max(1, min(workers, by_memory))
        n = r["batch_size"]
        estimate = min(workers * n / whole_ms, n / model_ms) * 1e3
        options.append({"texts_per_batch": n, "workers": workers, "workers_by_memory": by_memory,
                        "texts_per_s_estimate": estimate, "whole_path_ms": whole_ms, "model_ms": model_ms,
                        "device_share": model_ms / whole_ms})
    best = max(o["texts_per_s_estimate"] for o in options)
    pick = next(o for o in options if o["texts_per_s_estimate"] >= 0.95 * best)
    pick["torchserve_batch_size"] = max(1, min(round(pick["texts_per_batch"] / texts_per_request), SETTINGS.job_queue_size))
    pick["texts_per_request"] = texts_per_request
    pick["rule"] = RULE
    if gpu_memory is None:
        pick["note"] = ("measured on the CPU, where the forward pass is host work too: workers there share the cores "
                        "(docs/SCALING.md); the GPU overlay's figures come from a run with --device cuda")
    return pick


# ---------------------------------------------------------------- TorchServe on the device (optional)


def torchserve_missing() -> list[str]:
    needs = {"java": shutil.which("java") is not None, "torchserve": importlib.util.find_spec("ts") is not None,
             "torch-model-archiver": importlib.util.find_spec("model_archiver") is not None,
             "locust": importlib.util.find_spec("locust") is not None}
    return [name for name, ok in needs.items() if not ok]


def sample_gpu(samples: list[list[float]], stop: threading.Event) -> None:
    """GPU utilization % and memory used MiB, every second, from nvidia-smi (as TorchServe finds the GPU)."""
    while not stop.wait(1.0):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            samples.append([float(v) for v in out.splitlines()[0].split(",")])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def torchserve_step(cfg: DeviceCheckConfig, rec: dict, out: Path) -> dict[str, Any]:
    """The archive served by TorchServe with the recommended workers and batch size, under the project's
    load generator (loadtests/loadgen.py, the load mix) for torchserve_seconds."""
    missing = torchserve_missing()
    if missing:
        return {"ran": False, "reason": f"not installed here: {', '.join(missing)} (docs/GPU.md, TorchServe on the GPU)"}
    from loadtests.torchserve_process import TorchServe
    from training.archive import ArchiveConfig, build_archive

    work = Path(tempfile.mkdtemp(prefix="device-check-torchserve-"))
    build_archive(ArchiveConfig(run_dir=str((ROOT / cfg.run_dir).resolve()), export_path=str(work / "model_store")))
    agent = ROOT / "build" / "batch-fill-agent.jar"
    settings = {"workers": rec["workers"], "batch_size": rec["torchserve_batch_size"],
                "batch_fill": "queued" if agent.is_file() else "wait"}
    server = TorchServe(work / "model_store", work, **settings)
    outcomes, gpu, stop = work / "outcomes.jsonl", [], threading.Event()
    server.start(timeout=240)
    sampler = threading.Thread(target=sample_gpu, args=(gpu, stop), daemon=True)
    sampler.start()
    try:
        load = subprocess.run([sys.executable, "-m", "loadtests.loadgen", "--url", server.url, "--out", str(outcomes),
                               "--phases", f"{cfg.torchserve_users}:{cfg.torchserve_seconds}"],
                              cwd=ROOT, timeout=cfg.torchserve_seconds + 180, capture_output=True, text=True)
        if load.returncode != 0:
            raise RuntimeError(f"loadtests.loadgen exited with {load.returncode}: {load.stderr[-2000:]}")
    finally:
        stop.set()
        server.stop()
    logs = server.output() + "".join(p.read_text(errors="replace") for p in (work / "logs").glob("model_log*.log"))
    shutil.copyfile(work / "torchserve.out", out / "torchserve.log")
    outcomes_text = outcomes.read_text()
    shutil.rmtree(work, ignore_errors=True)
    lines = [json.loads(line) for line in outcomes_text.splitlines() if line.strip()]
    ok = [lat * 1e3 for _, lat, status, _, body_ok, _ in lines if status == 200 and body_ok]
    loaded_on = sorted(set(re.findall(r"gru_encoder loaded on (\S+)", logs)))
    return {
        "ran": True, "settings": settings, "users": cfg.torchserve_users, "seconds": cfg.torchserve_seconds,
        "workers_loaded_on": loaded_on, "requests": len(lines), "ok": len(ok),
        "statuses": {str(k): v for k, v in Counter(line[2] for line in lines).items()},
        "requests_per_s": len(ok) / cfg.torchserve_seconds,
        "texts_per_s_estimate": len(ok) / cfg.torchserve_seconds * rec["texts_per_request"],
        "latency_ms": {"p50": percentile(ok, 50), "p95": percentile(ok, 95), "p99": percentile(ok, 99)},
        "gpu_utilization_pct": {"median": percentile([s[0] for s in gpu], 50), "max": max((s[0] for s in gpu), default=None)},
        "gpu_memory_used_mib": max((s[1] for s in gpu), default=None),
    }


# ---------------------------------------------------------------- chart and summary


def draw_chart(results: dict, path: Path) -> str | dict[str, str]:
    """Texts/s, ms per batch and memory by batch size; {"skipped": why} without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return {"skipped": "matplotlib is not installed here; draw it elsewhere with --replot results.json"}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["batches"]
    sizes = [r["batch_size"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name in PATHS:
        axes[0].plot(sizes, [r[name]["texts_per_s"] for r in rows], marker="o", label=name)
        axes[1].plot(sizes, [r[name]["ms"]["median"] for r in rows], marker="o", label=name)
    mem = [r["memory"].get("peak_reserved_bytes") or r["memory"].get("rss_bytes") for r in rows]
    axes[2].plot(sizes, [m / 2**20 for m in mem], marker="o")
    titles = ("texts/s (median)", "ms per server batch (median)",
              "MiB: allocator's peak reserved" if rows[0]["memory"].get("peak_reserved_bytes") is not None else "MiB: process RSS")
    for i, (ax, title) in enumerate(zip(axes, titles)):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if i < 2 else "linear")
        ax.set_xlabel("texts per server batch")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    env = results["environment"]
    fig.suptitle(f"gru_encoder on {env['device']} ({env.get('device_name', '')}), torch {env['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def summary(results: dict) -> str:
    c = results["correctness"]
    diff = c["max_abs_diff"]
    lines = [f"correctness: {'ok' if c['ok'] else 'FAILED'}; max |device - CPU| output {diff['output']}, hidden {diff['hidden']} "
             f"(tolerance {c['tolerance']:g})" + "".join(f"\n  {p}" for p in c["problems"])]
    if "ieee_max_abs_diff" in c:
        lines.append(f"  with cuDNN's RNN in IEEE fp32 (served: {c['cudnn_rnn_fp32_precision']}): {c['ieee_max_abs_diff']}")
    lines.append("texts | model ms | json ms (parse/tokenize/forward/serialize) | npz ms | model texts/s | json texts/s | npz texts/s")
    for r in results["batches"]:
        st = r["json"]["stages_ms"]
        lines.append(f"{r['batch_size']:>5} | {r['model']['ms']['median']:8.2f} | {r['json']['ms']['median']:8.2f} "
                     f"({st['parse']:.1f}/{st['tokenize']:.1f}/{st['forward']:.1f}/{st['serialize']:.1f}) | "
                     f"{r['npz']['ms']['median']:8.2f} | {r['model']['texts_per_s']:10.0f} | {r['json']['texts_per_s']:9.0f} | "
                     f"{r['npz']['texts_per_s']:9.0f}")
    rec = results["recommendation"]
    lines.append(f"recommendation: {rec['texts_per_batch']} texts a server batch (TorchServe batch_size {rec['torchserve_batch_size']}), "
                 f"{rec['workers']} workers, about {rec['texts_per_s_estimate']:.0f} texts/s")
    return "\n".join(lines)


# ---------------------------------------------------------------- the run


def run(cfg: DeviceCheckConfig) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.out) if cfg.out else ROOT / "loadtests" / "results" / f"device-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    run_dir = (ROOT / cfg.run_dir) if not Path(cfg.run_dir).is_absolute() else Path(cfg.run_dir)
    limits = Limits()
    loaded = load_encoder(run_dir, map_location=device)  # as the handler loads it
    service = EncoderService(loaded, limits, device)
    router = Router(service, {})
    cpu_router = Router(EncoderService(load_encoder(run_dir), limits, "cpu"), {})
    results: dict[str, Any] = {"config": asdict(cfg), "environment": environment(device)}
    print(f"device check on {device} ({results['environment']['device_name']}), writing {out}", flush=True)

    texts = held_out_texts()
    bodies = correctness_bodies(texts, cfg, service.state_shape)
    results["correctness"], answers = check_correctness(router, cpu_router, bodies, cfg, device)
    write_answers(out / "answers.npz", bodies, answers, service.state_shape)

    sizes = cfg.sizes()
    pairs = request_mix(texts, max(2000, sizes[-1]), seed=cfg.seed)  # (kind, body): at least one text a request
    mix = [body for _, body in pairs]
    per_request = sum(len(b["texts"]) for b in mix) / len(mix)
    results["workload"] = {"texts": f"the held-out test split ({len(texts)} distinct sentences)",
                           "requests": "loadtests/workload.py's weighted mix, in order, the last request cut to fit",
                           "texts_per_request": per_request, "kinds": dict(Counter(kind for kind, _ in pairs))}
    rows, gpu_memory = [], None
    for n in tqdm(sizes, desc="batch sizes", unit="size"):
        rows.append(measure_batch(n, mix, service, router, device, cfg))
        if device.type == "cuda" and gpu_memory is None:
            # What this process uses beyond its allocator after the first batch: the CUDA context, cuDNN, cuBLAS.
            free, total = torch.cuda.mem_get_info(device)
            gpu_memory = {"total_bytes": total, "context_bytes": total - free - torch.cuda.memory_reserved(device)}
    results["batches"] = rows
    results["memory"] = {"weights_bytes": sum(p.numel() * p.element_size() for p in service.encoder.parameters()),
                         **(gpu_memory or {"total_bytes": None, "context_bytes": None})}
    results["recommendation"] = recommend(rows, cfg, per_request, gpu_memory)
    results["torchserve"] = {"ran": False, "reason": "not asked for (--torchserve)"}
    if cfg.torchserve:
        try:
            results["torchserve"] = torchserve_step(cfg, results["recommendation"], out)
        except Exception as e:  # noqa: BLE001 - the figures above are measured: write them whatever TorchServe did
            results["torchserve"] = {"ran": False, "error": f"{type(e).__name__}: {e}"[:3000]}
    results["environment"]["third_party_modules"] = third_party_modules()
    results["chart"] = draw_chart(results, out / "chart.png") if cfg.chart else {"skipped": "--no-chart"}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results), flush=True)
    print(f"wrote {out / 'results.json'}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(DeviceCheckConfig, argv)
    if cfg.replot:
        path = Path(cfg.replot)
        print(draw_chart(json.loads(path.read_text()), path.with_name("chart.png")))
        return 0
    return 0 if run(cfg)["correctness"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
