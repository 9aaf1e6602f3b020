"""Hitless operations under steady callers: TorchServe's replicas restarted one at a time (make
rolling-restart), a settings change the README's way (GRU_ENCODER_WORKERS=1 make up-cpu: the same
scripts/compose-roll.sh, each replica recreated in turn) and back, one replica killed, a key reload,
a gateway restart and a new gateway container.

Two callers, each with a key of its own, send a prediction every 0.25 s throughout (under the test's
5 r/s per key): a plain requests.Session on a kept-alive connection with no retry at all (what fails
there is what the service itself failed), and the project's EncoderClient (it retries connection
errors and 502/503/504, as HTTP allows for an idempotent request). Every answer must be a 200: also
across a gateway restart and a new gateway container, since the published socket is held by
gateway-port and connections wait in its queue for the next nginx (docs/RELIABILITY.md#hitless-operations)."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from gru_encoder.client import EncoderClient, EncoderError
from tests import ROOT
from tests.e2e.gateway import ONE_TEXT, PREDICT, bearer
from tests.e2e.project import run
from tests.e2e.report import Report
from tests.e2e.stack import Stack
from tests.e2e.stall import StallWatch

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

ROLL = ROOT / "scripts" / "compose-roll.sh"
INTERVAL_S = 0.25  # 4 requests a second per caller: under the test's GATEWAY_RATE of 5r/s
PROBE_S = 0.02  # the prober's pace (no rate limit on an unknown path)
PID_FILE = "/tmp/.model_server.pid"  # TorchServe's frontend in its container


class Background:
    """A loop (`_loop`, until `_stop` is set) on a thread of its own: start() and stop()."""

    _stop: threading.Event
    _thread: threading.Thread | None
    join_s = 120.0  # stop(): how long the current request may still take

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.join_s)

    def _loop(self) -> None:
        raise NotImplementedError


@dataclass
class Caller(Background):
    """Sends ONE_TEXT every INTERVAL_S until stopped; counts answers by outcome."""

    url: str
    key: str
    retrying: bool  # the project's EncoderClient (retries) or a plain kept-alive session (none)
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    slowest_s: float = 0.0
    slowest_sent_s: float = 0.0  # when the slowest was sent, from the caller's start (3 s before the operation)
    sending: tuple[str, float] | None = None  # the request id in flight and when it was sent (monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        client = EncoderClient(self.url, api_key=self.key, retries=20, backoff=0.2, backoff_max=2, max_texts=64)
        session = requests.Session()
        t_start = time.monotonic()
        run_id = secrets.token_hex(3)
        while not self._stop.is_set():
            t = time.monotonic()
            # Each request's own id (the gateway logs it, TorchServe's handler gets it): a failure names its id.
            request_id = f"{'client' if self.retrying else 'plain'}-{run_id}-{sum(self.outcomes.values())}"
            self.sending = (request_id, t)
            try:
                if self.retrying:
                    client.session.headers["X-Request-ID"] = request_id
                    r = client.post(ONE_TEXT)
                    self.retries += len(r.raw.retries.history) if r.raw.retries else 0
                else:
                    r = session.post(self.url + PREDICT, json=ONE_TEXT, headers={**bearer(self.key), "X-Request-ID": request_id},
                                     timeout=70)
                outcome = str(r.status_code)
                if r.status_code != 200:
                    self.failures.append(f"{t - t_start:6.1f} s: {request_id}: {r.status_code} {r.text[:160]}")
            except (requests.RequestException, EncoderError) as exc:
                outcome = type(exc).__name__
                self.failures.append(f"{t - t_start:6.1f} s: {request_id}: {type(exc).__name__}: {str(exc)[:160]}")
            self.sending = None
            self.outcomes[outcome] += 1
            if time.monotonic() - t > self.slowest_s:
                self.slowest_s, self.slowest_sent_s = time.monotonic() - t, t - t_start
            self._stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - t)))

    def summary(self) -> str:
        sent = sum(self.outcomes.values())
        kind = "EncoderClient" if self.retrying else "plain kept-alive session"
        extra = f", {self.retries} retries inside the client" if self.retrying else ""
        return (f"{kind}: {sent} requests, {sent - self.outcomes['200']} failed "
                f"({dict(self.outcomes)}){extra}, slowest {self.slowest_s:.2f} s (sent at {self.slowest_sent_s:.1f} s)")


@dataclass
class Prober(Background):
    """A new connection every PROBE_S, each asking for a path nginx answers itself (404, no rate limit): so that
    some connection is made while no nginx runs, however short that is; its slowest answer is about as long."""

    url: str
    outcomes: Counter = field(default_factory=Counter)
    slowest_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                status = requests.get(self.url + "/nowhere", headers={"Connection": "close"}, timeout=30).status_code
                self.outcomes[str(status)] += 1
            except requests.RequestException as exc:
                self.outcomes[type(exc).__name__] += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - t)
            self._stop.wait(max(0.0, PROBE_S - (time.monotonic() - t)))

    def summary(self) -> str:
        return f"new connection every {PROBE_S * 1000:.0f} ms: {dict(self.outcomes)}, slowest {self.slowest_s:.2f} s"


def probed(stack: Stack, operation) -> Prober:
    """The operation, with a prober running from 1 s before it to 1 s after."""
    prober = Prober(stack.url)
    prober.start()
    try:
        time.sleep(1)
        operation()
        time.sleep(1)
    finally:
        prober.stop()
    return prober


@pytest.fixture(scope="module")
def keys(stack: Stack) -> tuple[str, str]:
    """Two keys of the callers' own, taken up by a reload before any caller starts."""
    new = [secrets.token_urlsafe(32), secrets.token_urlsafe(32)]
    with stack.key_file.open("a") as f:
        f.write("".join(k + "\n" for k in new))
    stack.added_keys.extend(new)
    assert stack.project.exec("gateway", "gateway-entrypoint", "--reload").returncode == 0
    time.sleep(2)
    return new[0], new[1]


def under_callers(stack: Stack, keys: tuple[str, str], operation) -> tuple[Caller, Caller, float]:
    """Both callers running for 3 s before the operation and 5 s after it; the operation's seconds. A request
    that hangs gets a snapshot of where it is held (tests/e2e/stall.py), printed beside the failure."""
    plain, retrying = Caller(stack.url, keys[0], retrying=False), Caller(stack.url, keys[1], retrying=True)

    def in_flight() -> list[tuple[str, float]]:
        now = time.monotonic()
        return [(sending[0], now - sending[1]) for sending in (plain.sending, retrying.sending) if sending]

    with StallWatch(stack, in_flight) as watch:
        plain.start()
        retrying.start()
        try:
            time.sleep(3)
            t = time.monotonic()
            operation()
            took = time.monotonic() - t
            time.sleep(5)
        finally:
            plain.stop()
            retrying.stop()
    if watch.found:
        print(f"a hanging request: {watch.found}", flush=True)
    return plain, retrying, took


def roll(stack: Stack, action: str, **env: str) -> str:
    """scripts/compose-roll.sh ACTION with the test's compose command (no profiles: `up -d` starts only
    the stack) and settings; its messages."""
    result = run([str(ROLL), action, *stack.project.compose_command(profiles=False)], timeout=900,
                 env={**stack.project.env, **env}, merge=True)
    return "\n".join(line for line in result.stdout.splitlines() if line.startswith("compose-roll: "))


def report_operation(report: Report, what: str, took: float, plain: Caller, retrying: Caller) -> None:
    report.promise(f"{what} ({took:.0f} s), under steady callers: {plain.summary()}; {retrying.summary()}")
    for line in (plain.failures + retrying.failures)[:10]:
        report.promise(f"  {line}")


def test_a_rolling_restart_fails_no_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    lines: list[str] = []
    plain, retrying, took = under_callers(stack, keys, lambda: lines.append(roll(stack, "restart")))
    report.note(lines[0])
    report_operation(report, "make rolling-restart (scripts/compose-roll.sh restart: each replica restarted, "
                     "healthy before the next)", took, plain, retrying)
    assert not plain.failures and not retrying.failures


def test_a_settings_change_the_readmes_way_fails_no_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    before = stack.replicas
    lines: list[str] = []
    plain, retrying, took = under_callers(stack, keys, lambda: lines.append(roll(stack, "up", GRU_ENCODER_WORKERS="1")))
    report.note(lines[0])
    after = stack.replicas
    assert all(a != b for a, b in zip(after, before)), "both replicas should have been recreated with the new setting"
    for container in after:
        settings = [line for line in stack.project.logs(container).splitlines() if "gru-encoder-serve: settings" in line]
        assert settings and re.search(r"workers[\"'=: ]+1\b", settings[-1]), settings[-1:]
    report_operation(report, "GRU_ENCODER_WORKERS=1 make up-cpu's step (scripts/compose-roll.sh up: each replica "
                     "recreated with workers=1, healthy before the next)", took, plain, retrying)
    assert not plain.failures and not retrying.failures
    # Back to the test's settings (later tests' `compose up` would otherwise recreate a replica).
    plain, retrying, took = under_callers(stack, keys, lambda: roll(stack, "up"))
    stack.torchserve = stack.project.container("torchserve")  # recreated: later tests look at the new one
    report_operation(report, "and back to the default workers the same way", took, plain, retrying)
    assert not plain.failures and not retrying.failures


def test_one_replica_killed_fails_no_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    def kill_and_wait() -> None:
        killed = stack.project.exec("torchserve", "sh", "-c", f'kill -KILL "$(cat {PID_FILE})"')
        assert killed.returncode == 0, killed.stderr
        time.sleep(3)
        stack.project.wait_healthy(stack.project.container("torchserve"), 300)

    plain, retrying, took = under_callers(stack, keys, kill_and_wait)
    report_operation(report, "TorchServe killed (SIGKILL) in one replica, until its restart policy brought it back "
                     "healthy", took, plain, retrying)
    assert not plain.failures and not retrying.failures


def test_a_key_reload_fails_no_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    def reload_three_times() -> None:
        for _ in range(3):
            assert stack.project.exec("gateway", "gateway-entrypoint", "--reload").returncode == 0
            time.sleep(2)

    plain, retrying, took = under_callers(stack, keys, reload_three_times)
    report_operation(report, "gateway-entrypoint --reload, 3 times 2 s apart", took, plain, retrying)
    assert not plain.failures and not retrying.failures


def test_a_gateway_restart_fails_no_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    def restart() -> None:
        stack.project.compose("restart", "gateway", timeout=120)
        stack.project.wait_healthy(stack.gateway, 120)

    probes: list[Prober] = []
    plain, retrying, took = under_callers(stack, keys, lambda: probes.append(probed(stack, restart)))
    report_operation(report, "docker compose restart gateway (its port's socket held by gateway-port)", took,
                     plain, retrying)
    report.promise(f"  and meanwhile a {probes[0].summary()}")
    assert set(probes[0].outcomes) == {"404"}, probes[0].outcomes
    memory = stack.project.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", stack.gateway_port).stdout
    report.promise(f"gateway-port's memory, what holding the socket costs: {memory.strip()}")
    assert not plain.failures and not retrying.failures


def test_a_new_gateway_container_fails_no_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    """What a new gateway image or gateway setting does: the container removed and made anew."""
    port_holder = stack.gateway_port

    def recreate() -> None:
        stack.project.compose("up", "-d", "--no-build", "--no-deps", "--force-recreate", "gateway", timeout=180)
        stack.gateway = stack.project.container("gateway")  # later tests look at the new one
        stack.project.wait_healthy(stack.gateway, 120)

    old = stack.gateway
    probes: list[Prober] = []
    plain, retrying, took = under_callers(stack, keys, lambda: probes.append(probed(stack, recreate)))
    report_operation(report, "docker compose up -d --force-recreate gateway (a new gateway container, the same "
                     "gateway-port)", took, plain, retrying)
    report.promise(f"  and meanwhile a {probes[0].summary()}")
    assert set(probes[0].outcomes) == {"404"}, probes[0].outcomes
    assert stack.gateway != old and stack.project.container("gateway-port") == port_holder
    assert not plain.failures and not retrying.failures


def test_a_restarted_gateway_port_brings_the_gateway_back(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    """Not hitless, and not an operation anyone needs (gateway-port has nothing to change): its restart gives it a
    new network and a new socket, the gateway sees its holder gone and stops, and its restart policy starts it
    in the new network (docs/DEPLOY.md#two-replicas-and-hitless-operations)."""
    restarts = stack.project.inspect(stack.gateway)["RestartCount"]
    t = time.monotonic()
    stack.project.compose("restart", "gateway-port", timeout=120)
    session, status = requests.Session(), None
    while time.monotonic() - t < 60 and status != 200:
        try:
            status = session.post(stack.url + PREDICT, json=ONE_TEXT, headers=bearer(keys[0]), timeout=10).status_code
        except requests.RequestException:
            status = None
        time.sleep(0.25)
    took = time.monotonic() - t
    after = stack.project.inspect(stack.gateway)["RestartCount"]
    log = stack.project.logs(stack.gateway)
    report.promise(f"docker compose restart gateway-port: the gateway stopped and its restart policy started it "
                   f"(restart count {restarts} -> {after}); a keyed prediction 200 again {took:.1f} s after the restart began")
    assert status == 200 and after > restarts
    assert "the holder of the published socket (gru-encoder-gateway) is gone" in log
    stack.project.wait_healthy(stack.gateway, 120)
