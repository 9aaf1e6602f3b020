"""Locust as a library, in its own process: the load behind faults.py, overload.py and soak.py.

    .venv/bin/python -m loadtests.loadgen --url http://127.0.0.1:8080 --phases 300:20,4:10 --out outcomes.jsonl

Why a process of its own: importing locust monkey-patches the whole interpreter with gevent, which the
orchestrating scripts (and pytest running them) must not get; they kill workers, sample memory and poll
the management API with ordinary threads and blocking calls. This process only sends requests and
writes one JSON line per request: [start epoch s, latency s, HTTP status (0: no HTTP answer), kind,
body ok, detail]. `detail` is the first 300 characters of a non-200 body, or the client error
(connection reset, refused, timeout) when there was no answer. reliability/common.py reads them.

Phases ("users:seconds,...") are a locust LoadTestShape (Phases): each sets the user count, spawned or
stopped at once. Locust stops users gracefully (stop_timeout = --timeout + 5 s): a user told to stop
finishes the request it is in, so none goes unrecorded, and sends no other. A phase ends when its seconds
are up *and* the runner has reached its user count: after a drop, the next phase starts once the stopped
users' requests are answered (or stop_timeout passes). Locust polls a shape once a second, so phase
boundaries fall on whole seconds; each phase's start is logged ({"event": "phase", "t": ...}), a few ms
before locust stops the users a drop removes.
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
from locust import FastHttpUser, LoadTestShape, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from gru_encoder.api.contract import TENSORS, check_response  # noqa: E402
from loadtests.workload import KINDS, held_out_texts, make_body  # noqa: E402


class State:
    """What every user reads: the workload, and where outcomes go."""

    unfinished = 0  # requests killed before an answer (past stop_timeout): no outcome recorded
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
        """Closed loop: none. With --rate: until this user's next slot; a late request is not caught up in a
        burst. (A user waiting here is stopped at once; one in a request finishes it first.)"""
        if not State.rate:
            return 0.0
        self.next_at = max(self.next_at + 1.0 / State.rate, time.time())
        return self.next_at - time.time()

    def on_start(self) -> None:
        self.index = State.next_index
        State.next_index += 1
        self.rng = random.Random(f"{self.index}")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", "Accept-Encoding": "identity"}
        if State.rate:  # staggered first sends
            gevent.sleep(self.rng.random() / State.rate)
        self.next_at = time.time()

    @task
    def send(self) -> None:
        kind = self.rng.choices(State.kinds, State.weights)[0]
        body = make_body(kind, State.texts, self.rng)
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
        except BaseException:  # killed mid-request (stop_timeout passed): no outcome to record
            State.unfinished += 1
            raise
        State.lines.append(orjson.dumps([round(start, 6), round(latency, 6), status, kind, ok, detail]))


class Phases(LoadTestShape):
    """users:seconds in turn; then the run stops (every user finishes its request first)."""

    def __init__(self, phases: list[tuple[int, float]], settle_s: float):
        super().__init__()
        self.phases, self.settle_s = phases, settle_s  # settle_s: the longest a drop may wait for its users
        self.spawn_rate = max(max(u for u, _ in phases), 1) * 10  # all of a phase's users at once
        self.index, self.started = -1, 0.0

    def tick(self) -> tuple[int, float] | None:
        now = self.get_run_time()
        if self.index >= 0:
            users, seconds = self.phases[self.index]
            settled = self.get_current_user_count() == users or now - self.started >= seconds + self.settle_s
            if now - self.started < seconds or not settled:
                return users, self.spawn_rate
        self.index += 1
        if self.index == len(self.phases):
            return None
        users, seconds = self.phases[self.index]
        self.started = now
        print(json.dumps({"event": "phase", "t": time.time(), "users": users, "seconds": seconds}), flush=True)
        return users, self.spawn_rate


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

    stop_timeout = args.timeout + 5  # a stopped user's request ends by itself first (client timeout)
    env = Environment(user_classes=[ProbeUser], host=args.url, events=None, shape_class=Phases(phases, stop_timeout),
                      stop_timeout=stop_timeout)
    runner = env.create_local_runner()
    flusher = gevent.spawn(flush_forever)
    runner.start_shape()
    runner.shape_greenlet.join()  # the phases, then every user stopped (its request answered)
    runner.quit()
    gevent.sleep(0.5)  # one more flush
    flusher.kill()
    lines, State.lines = State.lines, []
    if lines:
        out.write(b"\n".join(lines) + b"\n")
    out.close()
    print(json.dumps({"event": "done", "t": time.time(), "unfinished": State.unfinished}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
