"""What faults.py, overload.py and soak.py share: a TorchServe they own, its worker processes, load in
a separate process (loadtests/loadgen.py) and the per-request outcomes it records.

Every figure these scripts print comes from per-request outcomes (start time, latency, status, body),
not from locust's aggregated stats: recovery after a kill, 503 latency and "no request hung" all need
to know *which* request failed *when*.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import psutil
import requests

from loadtests.workload import ROOT
from loadtests.torchserve_process import TorchServe

WORKER_SCRIPT = "model_service_worker.py"  # TorchServe's Python backend, one process per worker


# ---------------------------------------------------------------- the server


class Server(TorchServe):
    """loadtests.torchserve_process.TorchServe plus what fault injection needs: the worker processes, the
    frontend, and the management API's view of the workers. (`launch()` starts without waiting for the
    model, which a broken model never makes ready.)"""

    def workers(self) -> list[psutil.Process]:
        """The live Python worker processes (children of the Java frontend), oldest first."""
        return worker_processes(self.proc.pid) if self.proc else []

    def frontend(self) -> psutil.Process | None:
        """The Java frontend process (the `torchserve` launcher's child)."""
        if not self.proc:
            return None
        return next((p for p in psutil.Process(self.proc.pid).children(recursive=True) if p.name() == "java"), None)

    def describe(self) -> dict:
        """The management API's view of the model: workers (id, pid, status, memory) and the job queue."""
        r = requests.get(f"{self.management_url}/models/gru_encoder", timeout=10)
        r.raise_for_status()
        return r.json()[0]

    def ready_worker_pids(self) -> set[int]:
        """PIDs of workers the frontend reports READY (what it will send jobs to)."""
        try:
            return {w["pid"] for w in self.describe()["workers"] if w["status"] == "READY"}
        except (requests.RequestException, KeyError, IndexError, ValueError):
            return set()


def worker_processes(pid: int) -> list[psutil.Process]:
    """TorchServe's worker processes under `pid` (the launcher or the Java frontend), oldest first."""
    found = []
    try:
        for p in psutil.Process(pid).children(recursive=True):
            try:
                if any(WORKER_SCRIPT in part for part in p.cmdline()):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
    except psutil.NoSuchProcess:
        return []
    return sorted(found, key=lambda p: p.create_time())


def rss_mb(procs: Iterable[psutil.Process]) -> dict[int, float]:
    """Resident memory (MB) of each live process, by pid."""
    out = {}
    for p in procs:
        try:
            out[p.pid] = p.memory_info().rss / 1e6
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


def repack_mar(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """Copy a .mar (a zip) with some members' bytes replaced: a broken archive as a bad deploy would ship
    it. `make archive` itself refuses a broken run, so this is the only way such a .mar gets built."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, replace.get(info.filename, zin.read(info)))
    missing = set(replace) - {i.filename for i in zipfile.ZipFile(src).infolist()}
    if missing:
        raise KeyError(f"{sorted(missing)} not in {src}")
    return dst


# ---------------------------------------------------------------- load and its outcomes


@dataclass(frozen=True)
class Outcome:
    """One request as its client saw it."""

    start: float  # epoch seconds
    latency: float  # seconds until the whole body was read (or the error)
    status: int  # HTTP status; 0 = no HTTP answer (refused, reset, client timeout); -1 = unreadable
    kind: str  # the workload kind (loadtests/workload.py)
    ok: bool  # 200 and the body matches the request (shapes, lengths)
    detail: str  # non-200 body excerpt, or the client error

    @property
    def end(self) -> float:
        return self.start + self.latency


class Load:
    """loadtests/loadgen.py in its own process; outcomes() reads what it has recorded so far."""

    def __init__(self, url: str, workdir: Path, phases: str, *, rate: float = 0.0, kinds: str = "",
                 timeout: float = 60.0, check: bool = True, name: str = "load"):
        self.out = workdir / f"{name}-outcomes.jsonl"
        self.log_path = workdir / f"{name}-loadgen.log"
        self.cmd = [sys.executable, "-m", "loadtests.loadgen", "--url", url, "--phases", phases, "--rate", str(rate),
                    "--timeout", str(timeout), "--out", str(self.out)]
        self.cmd += ["--kinds", kinds] if kinds else []
        self.cmd += [] if check else ["--no-check"]
        self.proc: subprocess.Popen | None = None
        self._offset, self._seen = 0, []

    def __enter__(self) -> "Load":
        self.out.unlink(missing_ok=True)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def wait(self, timeout: float) -> list[Outcome]:
        """Wait for the load to end (its phases, then in-flight requests); every outcome."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"load generator still running after {timeout}s:\n{self.log_text()[-2000:]}")
        if rc != 0:
            raise RuntimeError(f"load generator exited with {rc}:\n{self.log_text()[-3000:]}")
        return self.outcomes()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def outcomes(self) -> list[Outcome]:
        """Every outcome recorded so far (the generator flushes 4 times a second)."""
        if self.out.exists():
            with open(self.out, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written stays for the next call
            self._offset += len(complete)
            self._seen += [Outcome(*json.loads(line)) for line in complete.splitlines() if line.strip()]
        return list(self._seen)

    def wait_for_successes(self, n: int, timeout: float) -> None:
        """Block until n requests succeeded: the load is really flowing before a fault is injected."""
        deadline = time.monotonic() + timeout
        while sum(o.ok for o in self.outcomes()) < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"load never reached {n} successes:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def latency_ms(outcomes: list[Outcome]) -> dict[str, float | None]:
    """p50/p99/max latency (ms) of some outcomes."""
    lat = [o.latency * 1e3 for o in outcomes]
    return {"n": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": max(lat) if lat else None}


def failure_kinds(outcomes: list[Outcome]) -> dict[str, int]:
    """Non-ok outcomes counted by 'status: detail' (detail cut to its first line), e.g. '507: Worker died.'"""
    counts: Counter = Counter()
    for o in outcomes:
        if not o.ok:
            detail = o.detail
            try:  # TorchServe's and the handler's errors are JSON: keep type + message
                body = json.loads(detail)
                detail = f"{body.get('type')}: {body.get('message')}"
            except (ValueError, AttributeError):
                pass
            counts[f"{o.status}: {detail.splitlines()[0][:160] if detail else ''}"] += 1
    return dict(counts)


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def archive_path(model_store: str, mar: str) -> Path:
    """The .mar a script serves, or a FileNotFoundError saying how to make it."""
    path = (ROOT / model_store / mar).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run make archive first")
    return path


def results_dir(out_dir: str, kind: str, suffix: str = "") -> Path:
    """loadtests/results/<kind>-<UTC time><suffix>/, where each script writes its results.json."""
    from datetime import datetime, timezone

    return ROOT / out_dir / f"{kind}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}{suffix}"


def script_main(results_of_args) -> int:
    """Entry point of a reliability script: run it, print every broken promise, exit 1 if any.

    results_of_args: () -> the results dict (parses the flags, runs). SIGTERM becomes an exit, so the
    scripts' `finally` blocks stop the servers they started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = results_of_args()
    for problem in results["broken"]:
        print(f"BROKEN PROMISE: {problem}", file=sys.stderr)
    return 1 if results["broken"] else 0
