"""Overload: far more concurrent callers than TorchServe can queue, then a quiet phase.

    make overload                                    # make archive, then ~1 min
    .venv/bin/python -m reliability.overload --help    # flags generated from OverloadConfig
    .venv/bin/python -m reliability.overload --job-queue-size 50   # try another queue bound

TorchServe admits a request while its model's job queue (`job_queue_size` in the serving settings) has
room and answers 503 at once when it is full. With `users` closed-loop callers (no think time) sending
multi-text requests, far more requests are outstanding than queue + batches in flight, so the queue
overflows for the whole phase. Then nobody sends for `drain_s` seconds, and at least until every request
already sent is answered (the load generator's phases, a locust LoadTestShape), and a few callers send at
a normal pace. The promises: every answer is a 200 (checked against its request) or a
fast 503 with a JSON body; admitted requests' latency stays bounded (the queue bounds the wait); no
connection resets, no hangs; and once the load drops, a quiet phase has no failure at all.
Writes results.json under <out-dir>/overload-<UTC time>/; exit status 1 when a promise fails.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gru_encoder.host.config_cli import config_from_args
from gru_encoder.host.settings import ServingSettings
from reliability.faults import response_timeout_s
from reliability.common import archive_path, failure_kinds, fmt_ms, latency_ms, Load, Outcome, percentile, results_dir, script_main, Server, write_json


FAST_503_SERVER_MS = 1000  # p99 of a 503 inside TorchServe (access log): it never waits for a worker
FAST_503_CLIENT_MS = 5000  # p99 of a 503 as a client saw it (generous: locust shares the 2 cores)


@dataclass(frozen=True)
class OverloadConfig:
    """Push TorchServe well past saturation, then measure how it recovers."""

    model_store: str = field(default="model_store", metadata={"help": "folder holding the .mar (make archive)"})
    mar: str = field(default="gru_encoder.mar", metadata={"help": "archive to serve"})
    url: str = field(default="", metadata={"help": "load this running server instead of starting one"})
    job_queue_size: int = field(default=0, metadata={"help": "job_queue_size for the server started here (0: the serving settings')"})
    users: int = field(default=300, metadata={"help": "closed-loop callers in the overload phase"})
    kinds: str = field(default="hidden only,8-32 texts", metadata={"help": "workload kinds sent (multi-text requests)"})
    overload_s: float = field(default=30.0, metadata={"help": "seconds of overload"})
    drain_s: float = field(default=5.0, metadata={"help": "seconds without new requests between the phases (longer while the backlog drains)"})
    quiet_users: int = field(default=4, metadata={"help": "callers in the quiet phase after it"})
    quiet_s: float = field(default=15.0, metadata={"help": "seconds of the quiet phase"})
    client_timeout_s: float = field(default=45.0, metadata={"help": "client timeout; above responseTimeout so a hang shows as one"})
    out_dir: str = field(default="loadtests/results", metadata={"help": "an overload-<UTC time>/ folder is written here"})


def is_json_503(o: Outcome) -> bool:
    """A 503 whose body is TorchServe's JSON error (a gateway in front would rewrite it to "overloaded")."""
    try:
        body = json.loads(o.detail)
    except ValueError:
        return False
    return o.status == 503 and isinstance(body, dict) and body.get("code") == 503 and bool(body.get("message"))


def phase_times(log: str) -> list[float]:
    """Start times (epoch) of the load generator's phases, from its log."""
    return [json.loads(line)["t"] for line in log.splitlines() if line.startswith("{") and '"phase"' in line]


def access_log_ms(log: Path, status: int) -> list[float]:
    """Server-side times (ms) of the answers with `status`, from TorchServe's access log: what the frontend
    spent, without the load generator's own queueing (it shares the CPU with the server)."""
    if not log.is_file():
        return []
    pattern = re.compile(rf'" {status} (\d+)$')
    return [float(m.group(1)) for line in log.read_text(errors="replace").splitlines() if (m := pattern.search(line))]


def latency_ms_values(ms: list[float]) -> dict[str, float | None]:
    """p50/p99/max of latencies already in ms (None when there are none, e.g. --url: no access log here)."""
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else None}


def summarize(outcomes: list[Outcome], drop: float, quiet_start: float, overload_s: float) -> dict:
    """Figures of both phases; a request belongs to the phase in which it was sent. Only the overload's callers
    send before the quiet phase: locust stops them a few ms after the drop is logged, and a request one of
    them began in between is the overload's too."""
    loud = [o for o in outcomes if o.start < quiet_start]
    quiet = [o for o in outcomes if o.start >= quiet_start]
    ok = [o for o in loud if o.ok]
    rejected = [o for o in loud if is_json_503(o)]
    other = [o for o in loud if not o.ok and not is_json_503(o)]
    sample = next((o.detail for o in rejected), None)
    return {
        "overload": {
            "requests": len(loud),
            "ok_200": len(ok),
            "rejected_503": len(rejected),
            "rejected_share": len(rejected) / max(len(loud), 1),
            "other_failures": failure_kinds(other),
            "no_http_answer": sum(1 for o in loud if o.status <= 0),
            "ok_per_s": len(ok) / overload_s,
            "latency_200": latency_ms(ok),
            "latency_503": latency_ms(rejected),
            "max_latency_s": max((o.latency for o in loud), default=None),
            "body_503": json.loads(sample) if sample else None,
            # The last request sent during the overload was answered this long after the load dropped.
            "backlog_drained_s": max((o.end for o in loud), default=drop) - drop,
        },
        "quiet": {
            "requests": len(quiet),
            "ok_200": sum(o.ok for o in quiet),
            "failures": failure_kinds(quiet),
            "latency_200": latency_ms([o for o in quiet if o.ok]),
        },
    }


def check(results: dict) -> list[str]:
    """Every promise that did not hold (empty when all did)."""
    loud, quiet, broken = results["overload"], results["quiet"], []
    if not loud["rejected_503"]:
        broken.append("the queue never overflowed (no 503): raise --users")
    if loud["other_failures"]:
        broken.append(f"answers other than 200 or a JSON 503: {loud['other_failures']}")
    if loud["max_latency_s"] is not None and loud["max_latency_s"] >= response_timeout_s():
        broken.append(f"a request took {loud['max_latency_s']:.1f} s, past responseTimeout {response_timeout_s():g} s")
    # Fast: TorchServe answers a 503 without queueing (its access log says ~0 ms); what a client sees adds
    # the load generator's own scheduling on this shared CPU, hence the generous client-side bound.
    server_p99, client_p99 = results["server_503_ms"]["p99_ms"], loud["latency_503"]["p99_ms"]
    if server_p99 is not None and server_p99 >= FAST_503_SERVER_MS:
        broken.append(f"503s took {server_p99:.0f} ms (p99) inside TorchServe, limit {FAST_503_SERVER_MS} ms")
    if client_p99 is not None and client_p99 >= FAST_503_CLIENT_MS:
        broken.append(f"503s took {client_p99:.0f} ms (p99) as clients saw them, limit {FAST_503_CLIENT_MS} ms")
    if quiet["failures"] or not quiet["ok_200"]:
        broken.append(f"quiet phase after the overload: {quiet['ok_200']} ok, failures {quiet['failures']}")
    return broken


def report(results: dict) -> str:
    loud, quiet = results["overload"], results["quiet"]
    l2, l5, lq = loud["latency_200"], loud["latency_503"], quiet["latency_200"]
    return "\n".join([
        f"overload ({results['config']['users']} users, {results['config']['overload_s']:g} s, job_queue_size {results['job_queue_size']}): "
        f"{loud['requests']} requests, {loud['ok_200']} 200 ({loud['ok_per_s']:.0f}/s), {loud['rejected_503']} 503 "
        f"({loud['rejected_share']:.0%}), other failures {loud['other_failures'] or 0}, no HTTP answer {loud['no_http_answer']}",
        f"  503 latency ms: p50 {fmt_ms(l5['p50_ms'])} p99 {fmt_ms(l5['p99_ms'])} max {fmt_ms(l5['max_ms'])}",
        f"  200 latency ms: p50 {fmt_ms(l2['p50_ms'])} p99 {fmt_ms(l2['p99_ms'])} max {fmt_ms(l2['max_ms'])}",
        f"  503 latency ms as TorchServe's access log has it: p50 {fmt_ms(results['server_503_ms']['p50_ms'])} "
        f"p99 {fmt_ms(results['server_503_ms']['p99_ms'])}; 200: p50 {fmt_ms(results['server_200_ms']['p50_ms'])} p99 {fmt_ms(results['server_200_ms']['p99_ms'])}",
        f"  503 body: {json.dumps(loud['body_503'])}",
        f"  backlog answered {loud['backlog_drained_s']:.1f} s after the load dropped",
        f"quiet ({results['config']['quiet_users']} users, {results['config']['quiet_s']:g} s): {quiet['requests']} requests, "
        f"{quiet['ok_200']} ok, failures {quiet['failures'] or 0}; latency ms p50 {fmt_ms(lq['p50_ms'])} p99 {fmt_ms(lq['p99_ms'])}",
    ])


def queue_size(cfg: OverloadConfig) -> int:
    """The job queue of a server started here: the flag, else the serving settings'."""
    return cfg.job_queue_size or ServingSettings.from_env().job_queue_size


def run(cfg: OverloadConfig, out: Path | None = None) -> dict:
    """Start a server (unless --url), overload it, quiet it; returns the results with 'broken' promises."""
    results: dict = {"config": asdict(cfg), "response_timeout_s": response_timeout_s(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="overload_") as tmp:
        tmp = Path(tmp)
        server = None
        results["job_queue_size"] = queue_size(cfg) if not cfg.url else "(the running server's)"
        try:
            if cfg.url:
                url = cfg.url
            else:
                mar = archive_path(cfg.model_store, cfg.mar)
                (tmp / "ts").mkdir()
                server = Server(mar.parent, tmp / "ts", mar=mar.name, job_queue_size=queue_size(cfg)).start()
                url = server.url
            phases = f"{cfg.users}:{cfg.overload_s},0:{cfg.drain_s},{cfg.quiet_users}:{cfg.quiet_s}"
            with Load(url, tmp, phases, kinds=cfg.kinds, timeout=cfg.client_timeout_s, name="overload") as load:
                # Each drop waits for the requests in flight, at most the client timeout (+ 5 s) each.
                outcomes = load.wait(timeout=cfg.overload_s + cfg.drain_s + cfg.quiet_s + 2 * (cfg.client_timeout_s + 5) + 60)
                starts = phase_times(load.log_text())
        finally:
            if server:
                server.stop()
        log = tmp / "ts" / "logs" / "access_log.log"
        results["server_503_ms"], results["server_200_ms"] = (
            {k: v for k, v in latency_ms_values(access_log_ms(log, code)).items()} for code in (503, 200))
    results.update(summarize(outcomes, starts[1], starts[2], cfg.overload_s))
    results["broken"] = check(results)
    results["load_after"] = os.getloadavg()
    print(report(results), flush=True)
    if out is None:
        out = results_dir(cfg.out_dir, "overload")
    write_json(out / "results.json", results)
    print(f"load average before {results['load_before']}, after {results['load_after']}; written to {out}/results.json")
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(lambda: run(config_from_args(OverloadConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
