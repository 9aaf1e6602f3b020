"""Locust load test of POST /predictions/gru_encoder with callers that look like real ones.

    make loadtest                                  # headless, 30 s, 8 users, against http://127.0.0.1:8080
    .venv/bin/locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 30s -H http://127.0.0.1:8080

Every response is checked (status, shapes, lengths) inside its request; the run fails (exit code 1)
when the failure ratio or the p95 latency is over its threshold (--max-fail-ratio, --max-p95-ms).
`--npz` asks for the binary response (Accept: application/x-npz) instead of JSON.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import orjson
from locust import FastHttpUser, constant, events

from gru_encoder.api.contract import JSON_TYPE, NPZ_TYPE, TENSORS, Encoded, check_response
from loadtests.workload import KINDS, held_out_texts, make_body

TEXTS: list[str] = []
# Server-side figures locust does not keep: texts answered and the X-Server-Batch-Size of each 200, and
# the measured window's start and end (epoch s), which the bench matches with its CPU samples.
EXTRA = {"requests": 0, "texts": 0, "batch_size_sum": 0, "bytes": 0, "t_start": 0.0, "t_stop": 0.0}


@events.init_command_line_parser.add_listener
def _flags(parser) -> None:
    parser.add_argument("--max-fail-ratio", type=float, default=0.01, help="fail the run above this failure ratio")
    parser.add_argument("--max-p95-ms", type=float, default=1000.0, help="fail the run when p95 latency is above this (ms)")
    parser.add_argument("--npz", action="store_true", default=False, help="ask for .npz responses instead of JSON")
    parser.add_argument("--model-name", default="gru_encoder", help="served model name (the URL path)")
    parser.add_argument("--path", default="", help="full request path (overrides /predictions/<model-name>; the peer uses /predict)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text sampling")
    parser.add_argument("--kinds", default="", help="comma-separated request kinds to send (default: the weighted mix)")
    parser.add_argument("--extra-stats", default="", help="write texts answered and mean server batch size here (JSON)")
    parser.add_argument("--api-key", default="", help="send Authorization: Bearer <key> (for a server behind the gateway)")


@events.init.add_listener
def _load_texts(environment, **_) -> None:
    TEXTS[:] = held_out_texts()


@events.spawning_complete.add_listener
def _reset_extra(user_count: int) -> None:
    # The bench runs with --reset-stats: count from the same moment as locust's own stats.
    EXTRA.update(requests=0, texts=0, batch_size_sum=0, bytes=0, t_start=time.time())


@events.quitting.add_listener
def _thresholds(environment, **_) -> None:
    """Exit code 1 when the run breaks its thresholds; writes the extra stats for the bench."""
    opts, total = environment.parsed_options, environment.stats.total
    EXTRA["t_stop"] = time.time()
    if opts.extra_stats:
        Path(opts.extra_stats).write_text(json.dumps(EXTRA))
    p95 = total.get_response_time_percentile(0.95) or 0.0
    if total.num_requests == 0:
        logging.error("no request was made")
        environment.process_exit_code = 1
    elif total.fail_ratio > opts.max_fail_ratio:
        logging.error("failure ratio %.3f is over --max-fail-ratio %.3f", total.fail_ratio, opts.max_fail_ratio)
        environment.process_exit_code = 1
    elif p95 > opts.max_p95_ms:
        logging.error("p95 latency %.0f ms is over --max-p95-ms %.0f", p95, opts.max_p95_ms)
        environment.process_exit_code = 1


def _task(kind: str):
    def run(user: EncoderUser) -> None:
        user.post(kind)

    run.__name__, run.kind = kind.replace(" ", "_").replace("-", "_"), kind
    return run


class EncoderUser(FastHttpUser):
    """One caller; closed loop (no think time) so the bench measures the server, not the waits."""

    wait_time = constant(0)
    # Weighted tasks, one per kind of caller (loadtests/workload.py: KINDS, shared with the bench's limit).
    tasks = {_task(k.name): k.weight for k in KINDS}

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.rng = random.Random(f"{opts.seed}-{id(self)}")
        self.path = opts.path or f"/predictions/{opts.model_name}"
        # identity: the same bytes from every server (LitServe gzips bodies over 1 kB when a client allows it).
        accept = NPZ_TYPE if opts.npz else JSON_TYPE
        self.headers = {"Content-Type": JSON_TYPE, "Accept": accept, "Accept-Encoding": "identity"}
        if opts.api_key:
            self.headers["Authorization"] = f"Bearer {opts.api_key}"
        if opts.kinds:  # only these kinds, with their weights
            self.tasks = [t for t in type(self).tasks if t.kind in opts.kinds.split(",")]
            if not self.tasks:
                raise ValueError(f"--kinds {opts.kinds!r} names no kind of {[k.name for k in KINDS]}")

    def post(self, kind: str) -> None:
        body = make_body(kind, TEXTS, self.rng)
        with self.client.post(self.path, data=orjson.dumps(body), headers=self.headers, name=kind, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                return
            try:
                npz = r.headers.get("Content-Type", "").startswith(NPZ_TYPE)
                answer = Encoded.from_npz(r.content) if npz else orjson.loads(r.content)
                problem = check_response(answer, len(body["texts"]), body.get("return", TENSORS))
            except Exception as e:  # an unreadable body is a failure of this request, not of the test
                problem = f"unreadable body: {e!r}"
            if problem:
                r.failure(problem)
                return
            r.success()
            EXTRA["requests"] += 1
            EXTRA["texts"] += len(body["texts"])
            EXTRA["batch_size_sum"] += int(r.headers.get("X-Server-Batch-Size", 0) or 0)
            EXTRA["bytes"] += len(r.content)

