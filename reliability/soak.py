"""Soak: steady load at ~70% of saturation for 10+ minutes; memory must not creep, nothing may fail.

    make soak                                     # make archive, then ~13 min (not run in CI)
    .venv/bin/python -m reliability.soak --help     # flags generated from SoakConfig
    .venv/bin/python -m reliability.soak --smoke    # ~40 s: the whole pipeline (tests/integration/test_soak.py)

1. saturation: closed-loop callers (no think time) for a short while: the successful requests/s of the
   workload mix this server sustains here and now.
2. soak: `users` callers, each at a fixed rate, together `fraction` of that throughput, for `duration_s`.
   Every `sample_s` seconds the worker processes' RSS (psutil; the Java frontend's too, reported, not
   judged) and the throughput of the last interval are recorded.
Promises: zero failed requests (every 200 checked against its request); the same worker processes from
start to end (a restart would also hide a leak); the workers' total RSS at the end within `max_growth` of
its value after `warmup_s` (medians of the samples in the first and last `window_s` seconds after the
warm-up, so one noisy sample decides nothing). Exit status 1 when a promise fails.
Writes results.json and soak.png under <out-dir>/soak-<UTC time>/.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from gru_encoder.host.config_cli import config_from_args
from reliability.common import archive_path, failure_kinds, fmt_ms, latency_ms, Load, results_dir, rss_mb, script_main, Server, worker_processes, write_json


@dataclass(frozen=True)
class SoakConfig:
    """Steady load at a fraction of saturation for a long time: failures, memory, throughput over time."""

    model_store: str = field(default="model_store", metadata={"help": "folder holding the .mar (make archive)"})
    mar: str = field(default="gru_encoder.mar", metadata={"help": "archive to serve"})
    url: str = field(default="", metadata={"help": "soak this running server instead of starting one"})
    management_url: str = field(default="", metadata={"help": "with --url: its management API, for the workers' memory"})
    kinds: str = field(default="", metadata={"help": "workload kinds sent (default: the weighted mix)"})
    saturation_users: int = field(default=32, metadata={"help": "closed-loop callers measuring saturation"})
    saturation_s: float = field(default=30.0, metadata={"help": "seconds of the saturation measurement"})
    fraction: float = field(default=0.7, metadata={"help": "soak rate as a fraction of the saturation throughput"})
    users: int = field(default=16, metadata={"help": "callers sharing the soak rate (each at a fixed rate)"})
    duration_s: float = field(default=600.0, metadata={"help": "seconds of soak"})
    warmup_s: float = field(default=120.0, metadata={"help": "memory is compared from this point of the soak on"})
    window_s: float = field(default=30.0, metadata={"help": "RSS at the start and end: median of the samples in this window"})
    sample_s: float = field(default=5.0, metadata={"help": "seconds between memory and throughput samples"})
    max_growth: float = field(default=0.10, metadata={"help": "allowed growth of the workers' RSS after the warm-up"})
    out_dir: str = field(default="loadtests/results", metadata={"help": "a soak-<UTC time>/ folder is written here"})
    smoke: bool = field(default=False, metadata={"help": "tiny run (~40 s) to check the pipeline"})


SMOKE = dict(smoke=True, saturation_users=8, saturation_s=5.0, users=8, duration_s=20.0, warmup_s=5.0, window_s=3.0, sample_s=1.0)


class MemoryProbe:
    """Workers' (and frontend's) RSS in MB: psutil when this script owns the server, else the management API."""

    def __init__(self, server: Server | None, management_url: str = ""):
        self.server, self.management_url = server, management_url.rstrip("/")

    def sample(self) -> dict | None:
        """{"workers": {pid: MB}, "frontend": MB or None}, or None when memory cannot be seen from here."""
        if self.server is not None:
            front = self.server.frontend()
            return {"workers": rss_mb(worker_processes(self.server.proc.pid)), "frontend": rss_mb([front]).get(front.pid) if front else None}
        if self.management_url:
            try:
                workers = requests.get(f"{self.management_url}/models/gru_encoder", timeout=5).json()[0]["workers"]
            except (requests.RequestException, ValueError, KeyError, IndexError):
                return None
            return {"workers": {w["pid"]: w["memoryUsage"] / 1e6 for w in workers}, "frontend": None}
        return None


def saturation(url: str, cfg: SoakConfig, workdir: Path) -> dict:
    """Successful requests/s of the mix under closed-loop callers (the first fifth of the run is a warm-up)."""
    with Load(url, workdir, f"{cfg.saturation_users}:{cfg.saturation_s}", kinds=cfg.kinds, name="saturation") as load:
        outcomes = load.wait(timeout=cfg.saturation_s + 120)
    t0 = min(o.start for o in outcomes) + cfg.saturation_s / 5
    t1 = min(o.start for o in outcomes) + cfg.saturation_s
    counted = [o for o in outcomes if o.ok and t0 <= o.end <= t1]
    return {"users": cfg.saturation_users, "seconds": cfg.saturation_s, "ok_per_s": len(counted) / (t1 - t0),
            "failed": sum(not o.ok for o in outcomes), "latency": latency_ms([o for o in outcomes if o.ok])}


def soak(url: str, cfg: SoakConfig, workdir: Path, probe: MemoryProbe, rate: float) -> dict:
    """The steady phase at `rate` requests/s in all; samples memory and throughput as it goes."""
    samples, printed = [], time.time()
    with Load(url, workdir, f"{cfg.users}:{cfg.duration_s}", rate=rate / cfg.users, kinds=cfg.kinds, name="soak") as load:
        load.wait_for_successes(1, timeout=60)
        start = last = time.time()
        while load.proc.poll() is None:
            time.sleep(max(0.0, last + cfg.sample_s - time.time()))
            now = time.time()
            outcomes = load.outcomes()
            recent = [o for o in outcomes if last <= o.end < now]
            mem = probe.sample()
            samples.append({
                "t": now - start,
                "ok_per_s": sum(o.ok for o in recent) / (now - last),
                "failed_so_far": sum(not o.ok for o in outcomes),
                "workers_mb": mem["workers"] if mem else None,
                "workers_total_mb": sum(mem["workers"].values()) if mem else None,
                "frontend_mb": mem["frontend"] if mem else None,
            })
            last = now
            if now - printed >= (30 if cfg.duration_s >= 120 else cfg.sample_s):
                printed = now
                s = samples[-1]
                print(f"  {s['t']:6.0f} s  {s['ok_per_s']:6.1f} ok/s  failed {s['failed_so_far']}  workers "
                      f"{s['workers_total_mb'] or 0:.0f} MB  frontend {s['frontend_mb'] or 0:.0f} MB", flush=True)
        outcomes = load.wait(timeout=120)
    return {"samples": samples, "outcomes": outcomes, "start": start}


def analyse(cfg: SoakConfig, sat: dict, rate: float, run: dict) -> dict:
    """The figures and promises of a soak run."""
    outcomes, samples = run["outcomes"], [s for s in run["samples"] if s["t"] <= cfg.duration_s]  # not the wind-down
    ok = [o for o in outcomes if o.ok]
    measured = [s for s in samples if s["workers_total_mb"] is not None]
    warm = [s["workers_total_mb"] for s in measured if cfg.warmup_s <= s["t"] < cfg.warmup_s + cfg.window_s]
    end = [s["workers_total_mb"] for s in measured if s["t"] >= samples[-1]["t"] - cfg.window_s] if samples else []
    rss_warm, rss_end = (statistics.median(warm) if warm else None), (statistics.median(end) if end else None)
    growth = rss_end / rss_warm - 1 if rss_warm and rss_end else None
    pid_sets = {tuple(sorted(s["workers_mb"])) for s in measured}
    after_warm = [s["workers_total_mb"] for s in measured if s["t"] >= cfg.warmup_s]
    frontend = [s["frontend_mb"] for s in measured if s["frontend_mb"] is not None and s["t"] >= cfg.warmup_s]
    span = (max(o.end for o in outcomes) - min(o.start for o in outcomes)) if outcomes else 0.0
    results = {
        "saturation": sat,
        "target_per_s": rate,
        "duration_s": cfg.duration_s,
        "requests": len(outcomes),
        "ok": len(ok),
        "failed": len(outcomes) - len(ok),
        "failures": failure_kinds(outcomes),
        "achieved_per_s": len(ok) / span if span else 0.0,
        "latency": latency_ms(ok),
        "workers_rss_mb": {"after_warmup": rss_warm, "end": rss_end, "max_after_warmup": max(after_warm) if after_warm else None,
                           "growth": growth, "first_sample": measured[0]["workers_total_mb"] if measured else None},
        "frontend_rss_mb": {"after_warmup": frontend[0] if frontend else None, "end": frontend[-1] if frontend else None,
                            "max": max(frontend) if frontend else None},
        "worker_pid_sets": [list(p) for p in sorted(pid_sets)],
        "samples": samples,
    }
    broken = []
    if results["failed"]:
        broken.append(f"{results['failed']} failed requests: {results['failures']}")
    if not measured:
        print("WARNING: the workers' memory could not be measured (with --url give --management-url)", file=sys.stderr)
    elif growth is None:
        broken.append("no memory samples after the warm-up: make --duration-s longer than --warmup-s + --window-s")
    elif growth >= cfg.max_growth:
        broken.append(f"workers' RSS grew {growth:.1%} after the warm-up ({rss_warm:.0f} -> {rss_end:.0f} MB), limit {cfg.max_growth:.0%}")
    if len(pid_sets) > 1:
        broken.append(f"worker processes changed during the soak: {sorted(pid_sets)}")
    if results["achieved_per_s"] < 0.8 * rate:
        broken.append(f"the load generator reached {results['achieved_per_s']:.1f}/s of the {rate:.1f}/s asked: the soak ran lighter than planned")
    results["broken"] = broken
    return results


def report(r: dict) -> str:
    w, f, lat = r["workers_rss_mb"], r["frontend_rss_mb"], r["latency"]
    mb = lambda v: "-" if v is None else f"{v:.0f} MB"  # noqa: E731
    growth = "-" if w["growth"] is None else f"{w['growth']:+.1%}"
    return "\n".join([
        f"saturation: {r['saturation']['ok_per_s']:.1f} ok req/s at {r['saturation']['users']} users "
        f"(p50 {fmt_ms(r['saturation']['latency']['p50_ms'])} ms); soak target {r['target_per_s']:.1f} req/s",
        f"soak: {r['duration_s']:g} s, {r['requests']} requests, {r['achieved_per_s']:.1f} ok/s, {r['failed']} failed "
        f"{r['failures'] or ''}; latency ms p50 {fmt_ms(lat['p50_ms'])} p99 {fmt_ms(lat['p99_ms'])} max {fmt_ms(lat['max_ms'])}",
        f"workers' RSS: first sample {mb(w['first_sample'])}, after warm-up {mb(w['after_warmup'])}, end {mb(w['end'])}, "
        f"max {mb(w['max_after_warmup'])}, growth {growth}; frontend (Java) {mb(f['after_warmup'])} -> {mb(f['end'])} (max {mb(f['max'])})",
    ])


def plot(r: dict, cfg: SoakConfig, path: Path) -> None:
    """RSS (per worker, total, frontend) and throughput over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = r["samples"]
    t = [s["t"] for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    pids = sorted({pid for s in samples if s["workers_mb"] for pid in s["workers_mb"]})
    for pid in pids:
        ax1.plot(t, [(s["workers_mb"] or {}).get(pid) for s in samples], label=f"worker {pid}")
    ax1.plot(t, [s["workers_total_mb"] for s in samples], color="black", label="workers total")
    if any(s["frontend_mb"] for s in samples):
        ax1.plot(t, [s["frontend_mb"] for s in samples], linestyle="--", label="frontend (Java)")
    ax1.axvline(cfg.warmup_s, color="gray", linestyle=":", label="end of warm-up")
    ax1.set(ylabel="RSS MB", title=f"soak at {r['target_per_s']:.0f} req/s ({cfg.fraction:.0%} of saturation): memory")
    ax2.plot(t, [s["ok_per_s"] for s in samples], label="ok requests/s")
    ax2.axhline(r["target_per_s"], color="gray", linestyle=":", label="target")
    ax2.set(xlabel="seconds into the soak", ylabel="requests/s", title=f"throughput ({r['failed']} failed)")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: SoakConfig, out: Path | None = None) -> dict:
    """Saturation, then the soak; writes results.json and soak.png; returns the results with 'broken'."""
    out = out or results_dir(cfg.out_dir, "soak", "-smoke" if cfg.smoke else "")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        tmp, server = Path(tmp), None
        try:
            if cfg.url:
                url = cfg.url
            else:
                mar = archive_path(cfg.model_store, cfg.mar)
                (tmp / "ts").mkdir()
                server = Server(mar.parent, tmp / "ts", mar=mar.name).start()
                url = server.url
            probe = MemoryProbe(server, cfg.management_url)
            sat = saturation(url, cfg, tmp)
            rate = cfg.fraction * sat["ok_per_s"]
            print(f"saturation {sat['ok_per_s']:.1f} ok req/s at {cfg.saturation_users} users; soaking at {rate:.1f} req/s "
                  f"({cfg.users} users x {rate / cfg.users:.2f}/s) for {cfg.duration_s:g} s", flush=True)
            soaked = soak(url, cfg, tmp, probe, rate)
        finally:
            if server:
                server.stop()
    results = {"config": asdict(cfg), "load_before": load_before, **analyse(cfg, sat, rate, soaked), "load_after": os.getloadavg()}
    print(report(results), flush=True)
    write_json(out / "results.json", results)
    plot(results, cfg, out / "soak.png")
    print(f"load average before {load_before}, after {results['load_after']}; written to {out}/ (results.json, soak.png)")
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(lambda: run(config_from_args(SoakConfig, argv, presets={"smoke": SMOKE})))


if __name__ == "__main__":
    sys.exit(main())
