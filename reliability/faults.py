"""Fault injection against a real TorchServe this script starts: what a client sees when things break.

    make faults                                   # make archive, then every part (~2 min)
    .venv/bin/python -m reliability.faults --help   # flags generated from FaultsConfig
    .venv/bin/python -m reliability.faults --parts kill-one,restart

Parts (tests/integration/test_faults.py runs each against the smoke archive):
- kill-one / kill-all: SIGKILL one / every Python worker (`model_service_worker.py`, children of the Java
  frontend) while locust users send the workload mix. TorchServe starts new workers; we report the
  seconds from the kill until a request sent after it succeeds and until every worker is READY again,
  which requests failed (status, body) and the slowest request (none may wait past responseTimeout).
- restart: stop TorchServe and start it again with the same config and model store: the model comes
  back from model_store by itself and answers with bit-identical tensors.
- corrupt / mismatch: a .mar whose encoder.safetensors has flipped bytes (its sha256 no longer matches
  config.json), or holds weights of another shape (config.json's sha256 rewritten to match). The model
  must never answer 200 and TorchServe's log must carry the loader's one-line ArtifactError saying what
  is wrong and how to fix it. Stopped as soon as the log shows it (a failing worker retries with backoff).
Writes results.json under <out-dir>/faults-<UTC time>/; exit status 1 when a promise fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import requests
from safetensors.torch import save

from gru_encoder.host.config_cli import config_from_args
from gru_encoder.host.settings import ServingSettings
from gru_encoder.core.model import Encoder, EncoderConfig
from reliability.common import archive_path, failure_kinds, fmt_ms, latency_ms, Load, Outcome, results_dir, script_main, Server, write_json

SETTINGS = ServingSettings.from_env()  # what the servers started here run with
PARTS = ("kill-one", "kill-all", "restart", "corrupt", "mismatch")
# The texts whose tensors must survive a restart bit for bit (lengths 2 to ~15 tokens, CJK, unknown words).
PROBE_TEXTS = ["hi .", "I am cold.", "He is very tall and she is not, I think.", "zorblax quux!", "我爱你"]


@dataclass(frozen=True)
class FaultsConfig:
    """Kill workers under load, restart TorchServe, serve broken weights; print what clients saw."""

    model_store: str = field(default="model_store", metadata={"help": "folder holding the .mar (make archive)"})
    mar: str = field(default="gru_encoder.mar", metadata={"help": "archive to serve (and to break for corrupt/mismatch)"})
    parts: str = field(default=",".join(PARTS), metadata={"help": f"which parts to run, of {','.join(PARTS)}"})
    users: int = field(default=16, metadata={"help": "locust users (closed loop) during the kills"})
    kinds: str = field(default="", metadata={"help": "workload kinds the users send (default: the weighted mix)"})
    before_s: float = field(default=5.0, metadata={"help": "seconds of load before the kill"})
    after_s: float = field(default=20.0, metadata={"help": "seconds of load after the kill"})
    client_timeout_s: float = field(default=45.0, metadata={"help": "client timeout; above responseTimeout so a hang shows as one"})
    broken_deadline_s: float = field(default=90.0, metadata={"help": "give up waiting for the loader's message after this"})
    out_dir: str = field(default="loadtests/results", metadata={"help": "a faults-<UTC time>/ folder is written here"})


def response_timeout_s() -> float:
    """The server's promise for one request: the serving settings' response_timeout_s."""
    return float(SETTINGS.response_timeout_s)


# ---------------------------------------------------------------- kill workers under load


def kill_workers(server: Server, which: str, cfg: FaultsConfig, workdir: Path) -> dict:
    """SIGKILL one ('one') or every ('all') worker during a locust run; what the clients saw."""
    phases = f"{cfg.users}:{cfg.before_s + cfg.after_s}"
    with Load(server.url, workdir, phases, kinds=cfg.kinds, timeout=cfg.client_timeout_s, name=f"kill-{which}") as load:
        load.wait_for_successes(20, timeout=60)
        time.sleep(cfg.before_s)
        victims = server.workers() if which == "all" else server.workers()[:1]
        old_pids = {p.pid for p in server.workers()}
        t_kill = time.time()
        for p in victims:
            os.kill(p.pid, signal.SIGKILL)
        # Until the frontend reports `workers` READY workers again, none of them a killed one.
        back_s, want = None, SETTINGS.workers
        while time.time() - t_kill < cfg.after_s + 60 and back_s is None:  # the load may end first: keep watching
            ready = server.ready_worker_pids()
            if len(ready) >= want and not ready & {p.pid for p in victims}:
                back_s = time.time() - t_kill
            time.sleep(0.05)
        outcomes = load.wait(timeout=cfg.after_s + cfg.client_timeout_s + 60)
    new_pids = {p.pid for p in server.workers()}
    return summarize_kill(outcomes, t_kill, which, len(victims), back_s, sorted(new_pids - old_pids))


def summarize_kill(outcomes: list[Outcome], t_kill: float, which: str, killed: int, back_s: float | None, new_pids: list[int]) -> dict:
    """Recovery and failure figures of one kill, from every request's outcome (times relative to the kill)."""
    failed = [o for o in outcomes if not o.ok]
    after_ok = [o for o in outcomes if o.ok and o.start >= t_kill]
    window = [o for o in outcomes if o.end >= t_kill and o.start <= t_kill + (back_s or 0) + 1]
    return {
        "which": which,
        "workers_killed": killed,
        "requests": len(outcomes),
        "ok": sum(o.ok for o in outcomes),
        "failed": len(failed),
        "failures": failure_kinds(outcomes),
        # A request sent after the kill succeeded this long after it (queued ones wait for new workers).
        "recovery_s": min(o.end for o in after_ok) - t_kill if after_ok else None,
        "workers_ready_again_s": back_s,
        "last_failure_end_s": max(o.end for o in failed) - t_kill if failed else None,
        "failed_after_workers_back": sum(1 for o in failed if back_s is not None and o.start > t_kill + back_s),
        "max_latency_s": max((o.latency for o in outcomes), default=None),
        "latency_around_kill": latency_ms(window),
        "latency_all": latency_ms(outcomes),
        "no_http_answer": sum(1 for o in outcomes if o.status <= 0),
        "new_worker_pids": new_pids,
    }


# ---------------------------------------------------------------- restart


def probe(url: str) -> dict[str, np.ndarray]:
    """The probe texts' tensors as the server sends them (.npz: exact float32 bits)."""
    r = requests.post(f"{url}/predictions/gru_encoder", json={"texts": PROBE_TEXTS},
                      headers={"Accept": "application/x-npz"}, timeout=30)
    r.raise_for_status()
    z = np.load(io.BytesIO(r.content))
    return {k: z[k] for k in ("ids", "lengths", "output", "hidden")}  # (B, T), (B,), (B, T, D*H), (L*D, B, H)


def restart(server: Server) -> dict:
    """Stop and start TorchServe with the same config and store; is the same model back by itself?"""
    before, pids_before = probe(server.url), {p.pid for p in server.workers()}
    t0 = time.monotonic()
    server.stop()
    stopped_s = time.monotonic() - t0
    t1 = time.monotonic()
    server.start()
    ready_s = time.monotonic() - t1
    after = probe(server.url)
    # The first 200 needs one worker; the rest may still be loading. Wait (bounded) for all of them.
    want, deadline = SETTINGS.workers, time.monotonic() + 120
    while len(server.ready_worker_pids()) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    all_ready_s = time.monotonic() - t1
    described = server.describe()
    return {
        "stop_s": stopped_s,
        "start_to_first_200_s": ready_s,
        "start_to_all_workers_ready_s": all_ready_s,
        "identical_tensors": all(np.array_equal(before[k], after[k]) for k in before),
        "loaded_at_startup": described.get("loadedAtStartup"),
        "workers_ready": sum(w["status"] == "READY" for w in described["workers"]),
        "new_workers": not (pids_before & {p.pid for p in server.workers()}),
    }


# ---------------------------------------------------------------- broken weights


def broken_mar(good: Path, kind: str, dst: Path) -> Path:
    """A copy of `good` with corrupt ('corrupt') or wrong-shape ('mismatch') weights.

    corrupt: 16 bytes in the middle of encoder.safetensors flipped; config.json untouched, so its sha256 no longer matches.
    mismatch: a freshly initialised encoder with twice the hidden size, and config.json's sha256 rewritten to
    match it: the hash check passes and only the shape check can catch it."""
    from reliability.common import repack_mar

    with zipfile.ZipFile(good) as z:
        weights, config = z.read("encoder.safetensors"), json.loads(z.read("config.json"))
    if kind == "corrupt":
        data = bytearray(weights)
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
        return repack_mar(good, dst, {"encoder.safetensors": bytes(data)})
    if kind == "mismatch":
        other = EncoderConfig(**{**config["encoder"], "hidden_size": 2 * config["encoder"]["hidden_size"]})
        weights = save(Encoder(other).state_dict())
        config["files"]["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
        return repack_mar(good, dst, {"encoder.safetensors": weights, "config.json": json.dumps(config, indent=2).encode()})
    raise ValueError(f"kind {kind!r}: use corrupt or mismatch")


def serve_broken(mar: Path, kind: str, workdir: Path, cfg: FaultsConfig) -> dict:
    """Serve a broken .mar until its log shows the loader's ArtifactError; what clients and the log saw."""
    (workdir / "store").mkdir(parents=True, exist_ok=True)
    broken_mar(mar, kind, workdir / "store" / "gru_encoder.mar")
    server = Server(workdir / "store", workdir)
    answers: list[dict] = []
    t0 = time.monotonic()
    line, pattern = None, re.compile(r"^.*ArtifactError: (.*)$", re.M)
    server.launch()
    try:
        while time.monotonic() - t0 < cfg.broken_deadline_s:
            sent = time.monotonic()
            try:  # a short client timeout: a request may wait for the next (failing) worker start
                r = requests.post(f"{server.url}/predictions/gru_encoder", json={"texts": ["i am cold ."]}, timeout=5)
                answers.append({"t": sent - t0, "status": r.status_code, "body": r.text[:300], "latency_s": time.monotonic() - sent})
            except requests.RequestException as e:
                answers.append({"t": sent - t0, "status": 0, "body": type(e).__name__, "latency_s": time.monotonic() - sent})
            try:
                ping = requests.get(f"{server.url}/ping", timeout=5)
                answers[-1]["ping"] = f"{ping.status_code} {ping.text.strip()[:80]}"
            except requests.RequestException as e:
                answers[-1]["ping"] = type(e).__name__
            found = pattern.search(server.output())
            # The message, and what a client of the started frontend gets meanwhile: an answer, or none in time.
            if found and any(a["status"] or a["body"] != "ConnectionError" for a in answers):
                line = found.group(0)
                break
            time.sleep(0.5)
        described = server.describe() if server.proc and server.proc.poll() is None else {}
    finally:
        server.stop()
    statuses: dict[str, int] = {}
    for a in answers:
        key = f"{a['status']}: {summarize_body(a['body'])}"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "kind": kind,
        "seconds_to_log_message": time.monotonic() - t0 if line else None,
        "log_line": line,
        "message": line.split("ArtifactError: ", 1)[1] if line else None,
        "predictions": statuses,
        "any_200": any(a["status"] == 200 for a in answers),
        "ping": sorted({a.get("ping", "") for a in answers}),
        "worker_status": [w["status"] for w in described.get("workers", [])],
        "worker_starts_logged": server.output().count("Failed to load model"),
    }


def summarize_body(body: str) -> str:
    try:
        data = json.loads(body)
        return f"{data.get('type')}: {data.get('message')}"
    except ValueError:
        return body.strip()[:120]


# ---------------------------------------------------------------- main


def check(results: dict) -> list[str]:
    """Every promise that did not hold (empty when all did)."""
    broken, limit = [], response_timeout_s()
    for name in ("kill-one", "kill-all"):
        r = results.get(name)
        if r is None:
            continue
        if r["recovery_s"] is None or r["workers_ready_again_s"] is None:
            broken.append(f"{name}: the service never recovered (recovery {r['recovery_s']}, workers back {r['workers_ready_again_s']})")
        if r["max_latency_s"] is not None and r["max_latency_s"] >= limit:
            broken.append(f"{name}: a request took {r['max_latency_s']:.1f} s, past responseTimeout {limit:g} s")
        if r["no_http_answer"] or r["failed_after_workers_back"]:
            broken.append(f"{name}: {r['no_http_answer']} requests got no HTTP answer, {r['failed_after_workers_back']} failed after recovery")
    r = results.get("restart")
    if r is not None and not (r["identical_tensors"] and r["loaded_at_startup"] and r["new_workers"]
                              and r["workers_ready"] == SETTINGS.workers):
        broken.append(f"restart: {r}")
    for name in ("corrupt", "mismatch"):
        r = results.get(name)
        if r is not None and (r["any_200"] or not r["message"]):
            broken.append(f"{name}: any 200: {r['any_200']}, loader message in the log: {r['message']!r}")
    return broken


def report(results: dict) -> str:
    lines = []
    for name in ("kill-one", "kill-all"):
        if r := results.get(name):
            rec = "never" if r["recovery_s"] is None else f"{r['recovery_s']:.2f} s"
            back = "never" if r["workers_ready_again_s"] is None else f"{r['workers_ready_again_s']:.2f} s"
            lines.append(f"{name}: killed {r['workers_killed']} worker(s); first success of a request sent after the kill: {rec}; "
                         f"all workers READY again: {back}; {r['failed']} of {r['requests']} requests failed {r['failures'] or ''}; "
                         f"max latency {r['max_latency_s']:.2f} s (p99 around the kill {fmt_ms(r['latency_around_kill']['p99_ms'])} ms)")
    if r := results.get("restart"):
        lines.append(f"restart: stop {r['stop_s']:.1f} s, start to first 200 {r['start_to_first_200_s']:.1f} s, "
                     f"to all {r['workers_ready']} workers READY {r['start_to_all_workers_ready_s']:.1f} s, "
                     f"model loaded at startup: {r['loaded_at_startup']}, identical tensors: {r['identical_tensors']}, "
                     f"new workers: {r['new_workers']}")
    for name in ("corrupt", "mismatch"):
        if r := results.get(name):
            secs = "-" if r["seconds_to_log_message"] is None else f"{r['seconds_to_log_message']:.1f} s"
            lines.append(f"{name}: clients got {r['predictions']}; any 200: {r['any_200']}; /ping: {r['ping']}; "
                         f"log after {secs}: {r['log_line']}")
    return "\n".join(lines)


def run(cfg: FaultsConfig, out: Path | None = None) -> dict:
    """Run the chosen parts; returns results (also written to results.json) with 'broken' promises."""
    parts = [p for p in cfg.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    mar = archive_path(cfg.model_store, cfg.mar)
    results: dict = {"config": asdict(cfg), "response_timeout_s": response_timeout_s(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="faults_") as tmp:
        tmp = Path(tmp)
        live = [p for p in parts if p in ("kill-one", "kill-all", "restart")]
        if live:
            (tmp / "ts").mkdir()
            server = Server(mar.parent, tmp / "ts", mar=mar.name).start()
            try:
                for part in live:
                    results[part] = restart(server) if part == "restart" else kill_workers(server, part.split("-")[1], cfg, tmp)
                    print(report({part: results[part]}), flush=True)
            finally:
                server.stop()
        for part in (p for p in parts if p in ("corrupt", "mismatch")):
            results[part] = serve_broken(mar, part, tmp / part, cfg)
            print(report({part: results[part]}), flush=True)
    results["broken"] = check(results)
    results["load_after"] = os.getloadavg()
    if out is None:
        out = results_dir(cfg.out_dir, "faults")
    write_json(out / "results.json", results)
    print(f"\nload average before {results['load_before']}, after {results['load_after']}; written to {out}/results.json")
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(lambda: run(config_from_args(FaultsConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
