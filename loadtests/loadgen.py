"""Locust as a library, in its own process: the load behind faults.py, overload.py and soak.py.

    .venv/bin/python -m loadtests.loadgen --url http://127.0.0.1:8080 --phases 300:20,4:10 --out outcomes.jsonl

Why a process of its own: importing locust monkey-patches the whole interpreter with gevent, which the
orchestrating scripts (and pytest running them) must not get; they kill workers, sample memory and poll
the management API with ordinary threads and blocking calls. This process only sends requests and
writes one JSON line per request: [start epoch s, latency s, HTTP status (0: no HTTP answer), kind,
body ok, detail]. `detail` is the first 300 characters of a non-200 body, or the client error
(connection reset, refused, timeout) when there was no answer. reliability/common.py reads them.

Phases ("users:seconds,...") change how many users are active without killing any of them mid-request:
all users are spawned at once, a user past the current phase's count idles until a later phase wants it,
and at the end every in-flight request is allowed to finish (up to --timeout) so none goes unrecorded.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything imports ssl/socket (locust would do it anyway, later and with a warning)

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402
from locust import FastHttpUser, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from gru_encoder.api.contract import TENSORS, check_response  # noqa: E402
from loadtests.workload import KINDS, held_out_texts, make_body  # noqa: E402


class State:
    """What every user reads: the active user count of the current phase, and where outcomes go."""

    active = 0
    stopping = False
    in_flight = 0
    next_index = 0
    texts: list[str] = []
    kinds: list[str] = []
    weights: list[int] = []
    rate = 0.0  # requests/s per user; 0 = closed loop, no think time
    check = True
    path = "/predictions/gru_encoder"
    lines: list[bytes] = []


class ProbeUser(FastHttpUser):
    """One caller of the workload's kinds; records every request itself (not through locust's stats)."""

    # Set per run from --timeout: a request that would hang longer is recorded as a client timeout.
    network_timeout = 60.0
    connection_timeout = 60.0
    # One connection per user (the default pool would open up to 10): N users = N requests in flight.
    concurrency = 1

    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        self.index = State.next_index
        State.next_index += 1
        self.rng = random.Random(f"{self.index}")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", "Accept-Encoding": "identity"}
        self.next_at = time.time() + (self.rng.random() / State.rate if State.rate else 0.0)  # staggered first sends

    @task
    def send(self) -> None:
        if State.stopping or self.index >= State.active:
            gevent.sleep(0.02)
            self.next_at = max(self.next_at, time.time())
            return
        if State.rate:  # fixed rate per user: sleep to the next slot, never catch up in a burst
            delay = self.next_at - time.time()
            if delay > 0:
                gevent.sleep(delay)
            self.next_at = max(self.next_at + 1.0 / State.rate, time.time())
            if State.stopping:
                return
        kind = self.rng.choices(State.kinds, State.weights)[0]
        body = make_body(kind, State.texts, self.rng)
        State.in_flight += 1
        start = time.time()
        try:
            with self.client.post(State.path, data=orjson.dumps(body), headers=self.headers, name=kind, catch_response=True) as r:
                content = r.content or b""
                latency = time.time() - start
                status = int(r.status_code or 0)
                ok, detail = False, ""
                if status == 200:
                    problem = check_response(orjson.loads(content), len(body["texts"]), body.get("return", TENSORS)) if State.check else None
                    ok, detail = problem is None, problem or ""
                elif status:
                    detail = content[:300].decode("utf-8", "replace")
                else:
                    detail = repr(r.error)[:300]
                r.success()  # judged from the outcomes file, not by locust
        except Exception as e:  # noqa: BLE001 - an unreadable answer is this request's outcome, not a crash
            latency, status, ok, detail = time.time() - start, -1, False, repr(e)[:300]
        finally:
            State.in_flight -= 1
        State.lines.append(orjson.dumps([round(start, 6), round(latency, 6), status, kind, ok, detail]))


def parse_phases(text: str) -> list[tuple[int, float]]:
    """'300:20,4:10' -> [(300, 20.0), (4, 10.0)]: active users and seconds of each phase."""
    phases = []
    for part in text.split(","):
        users, _, seconds = part.partition(":")
        phases.append((int(users), float(seconds)))
    if not phases or any(u < 0 or s <= 0 for u, s in phases):
        raise ValueError(f"--phases {text!r}: give users:seconds pairs, e.g. 300:20,4:10")
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL")
    parser.add_argument("--path", default="/predictions/gru_encoder")
    parser.add_argument("--phases", required=True, help="users:seconds,... (active users per phase)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s per user (0: no think time)")
    parser.add_argument("--kinds", default="", help="comma-separated workload kinds (default: the weighted mix)")
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout per request (s)")
    parser.add_argument("--no-check", action="store_true", help="do not check 200 bodies against their requests")
    parser.add_argument("--out", required=True, help="JSON lines, one per request")
    args = parser.parse_args(argv)

    phases = parse_phases(args.phases)
    chosen = [k for k in KINDS if not args.kinds or k.name in args.kinds.split(",")]
    if not chosen:
        parser.error(f"--kinds {args.kinds!r} names no kind of {[k.name for k in KINDS]}")
    State.texts, State.rate, State.check, State.path = held_out_texts(), args.rate, not args.no_check, args.path
    State.kinds, State.weights = [k.name for k in chosen], [k.weight for k in chosen]
    ProbeUser.network_timeout = ProbeUser.connection_timeout = args.timeout

    out = open(Path(args.out), "ab")

    def flush_forever() -> None:  # the orchestrator reads the file while the load runs
        while True:
            lines, State.lines = State.lines, []
            if lines:
                out.write(b"\n".join(lines) + b"\n")
                out.flush()
            gevent.sleep(0.25)

    env = Environment(user_classes=[ProbeUser], host=args.url, events=None)
    runner = env.create_local_runner()
    flusher = gevent.spawn(flush_forever)
    most = max(u for u, _ in phases)
    State.active = 0
    runner.start(most, spawn_rate=max(most, 1) * 10)
    while State.next_index < most:  # every user exists before the first phase starts
        gevent.sleep(0.01)
    print(json.dumps({"event": "started", "t": time.time(), "users": most}), flush=True)
    for users, seconds in phases:
        State.active = users
        print(json.dumps({"event": "phase", "t": time.time(), "users": users, "seconds": seconds}), flush=True)
        gevent.sleep(seconds)
    State.stopping = True
    deadline = time.time() + args.timeout + 5
    while State.in_flight and time.time() < deadline:  # let every sent request finish and be recorded
        gevent.sleep(0.05)
    runner.quit()
    gevent.sleep(0.5)  # one more flush
    flusher.kill()
    lines, State.lines = State.lines, []
    if lines:
        out.write(b"\n".join(lines) + b"\n")
    out.close()
    print(json.dumps({"event": "done", "t": time.time(), "unfinished": State.in_flight}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
