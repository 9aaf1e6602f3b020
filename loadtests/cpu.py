"""CPU seconds of process trees and of the whole machine, from the kernel's accounting (psutil) while a
load runs.

Why CPU time and not wall-clock figures alone: this machine's 2 cores are shared with the load generator
(and, often, with other work), so req/s and latency move with whatever else runs. CPU-seconds spent by
the server per text answered do not: they say what serving costs, whoever else is busy.

A Sampler thread reads, every `interval` seconds, the CPU time (user + system) of every process in each
watched tree (a server: launcher, Java frontend, workers; a load generator) and the machine's busy time.
`rates(t0, t1)` turns the samples inside a window into cores used per role.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

GONE = (psutil.NoSuchProcess, psutil.AccessDenied)  # exited (ZombieProcess is one) or not ours to read


def process_cpu_s(pid: int) -> float | None:
    """user + system CPU seconds of one process (all its threads), None when it is gone.

    Its reaped children's time (cpu_times().children_*) is left out: the Sampler keeps an exited process's
    last reading under its own role instead (a killed worker's CPU is the worker's, not its parent's)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except GONE:
        return None
    return t.user + t.system


def tree(root: int) -> list[int]:
    """root and all its live descendants, root first (root alone when it is gone)."""
    try:
        return [root] + [p.pid for p in psutil.Process(root).children(recursive=True)]
    except GONE:
        return [root]


def role(pid: int) -> str:
    """Which part of a server a process is, from its command line: frontend (TorchServe's Java,
    LitServe's / Ray's HTTP side), worker (where the model runs), or other (launchers, Ray's daemons)."""
    try:
        argv = psutil.Process(pid).cmdline()
    except GONE:
        return "other"
    cmd = " ".join(argv)
    if (argv and "java" in argv[0]) or "ProxyActor" in cmd:
        return "frontend"
    if "model_service_worker" in cmd or "ServeReplica" in cmd or "spawn_main" in cmd:  # LitServe: multiprocessing
        return "worker"
    return "other"


def machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds of all cores, wall seconds since boot as the kernel's CPU counters count them)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    # Every state the kernel counts; guest time is already inside user (and guest_nice inside nice).
    total = sum(v for k, v in t._asdict().items() if k not in ("guest", "guest_nice"))
    return total - idle, total / (psutil.cpu_count() or 1)


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]  # "<group>.<role>" -> CPU seconds of the live processes, plus those seen to exit
    machine_s: float


@dataclass
class Sampler:
    """Samples the CPU of named process trees in a thread; `rates` gives cores used per group in a window."""

    roots: dict[str, int]  # group name -> root pid ("server": the launcher; "loadgen": locust or wrk)
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._roles: dict[int, str] = {}
        self._last: dict[int, tuple[str, float]] = {}  # pid -> (key, last CPU seen), to keep an exited process's share
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        seen: dict[int, tuple[str, float]] = {}
        for group, root in self.roots.items():
            for pid in tree(root):
                cpu = process_cpu_s(pid)
                if cpu is None:
                    continue
                if pid not in self._roles:
                    self._roles[pid] = role(pid)
                seen[pid] = (f"{group}.{self._roles[pid]}", cpu)
        gone = {pid: v for pid, v in self._last.items() if pid not in seen}
        self._last = {**gone, **seen}
        totals: dict[str, float] = {}
        for key, cpu in self._last.values():
            totals[key] = totals.get(key, 0.0) + cpu
        self.samples.append(Sample(time.time(), totals, machine_busy_s()[0]))

    def rates(self, t0: float | None = None, t1: float | None = None) -> dict[str, float]:
        """Cores used per "<group>.<role>", per group ("<group>") and by the machine ("machine"), between the
        first sample at or after t0 and the last at or before t1 (the whole run when not given)."""
        inside = [s for s in self.samples if (t0 is None or s.t >= t0) and (t1 is None or s.t <= t1)]
        if len(inside) < 2:
            inside = self.samples[:1] + self.samples[-1:]
        a, b = inside[0], inside[-1]
        span = max(b.t - a.t, 1e-9)
        out = {key: (b.cpu.get(key, 0.0) - a.cpu.get(key, 0.0)) / span for key in b.cpu}
        for group in self.roots:
            out[group] = sum(v for k, v in out.items() if k.startswith(group + "."))
        out["machine"] = (b.machine_s - a.machine_s) / span
        out["seconds"] = span
        return out
