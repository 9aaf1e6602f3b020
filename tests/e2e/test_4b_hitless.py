"""Hitless operations under steady callers: TorchServe's replicas restarted one at a time (make
rolling-restart), a settings change the README's way (GRU_ENCODER_WORKERS=1 make up-cpu: the same
scripts/compose-roll.sh, each replica recreated in turn) and back, one replica killed, a key reload,
and a gateway restart.

Two callers, each with a key of its own, send a prediction every 0.25 s throughout (under the test's
5 r/s per key): a plain requests.Session on a kept-alive connection with no retry at all (what fails
there is what the service itself failed), and the project's EncoderClient (it retries connection
errors and 502/503/504, as HTTP allows for an idempotent request). Every answer must be a 200, but for
the plain caller across a restart of the one gateway, which no configuration makes hitless (see
docs/RELIABILITY.md#hitless-operations): that count is reported, and the EncoderClient must see none."""

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

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

ROLL = ROOT / "scripts" / "compose-roll.sh"
INTERVAL_S = 0.25  # 4 requests a second per caller: under the test's GATEWAY_RATE of 5r/s
PID_FILE = "/tmp/.model_server.pid"  # TorchServe's frontend in its container


@dataclass
class Caller:
    """Sends ONE_TEXT every INTERVAL_S until stopped; counts answers by outcome."""

    url: str
    key: str
    retrying: bool  # the project's EncoderClient (retries) or a plain kept-alive session (none)
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    slowest_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"caller-{self.retrying}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(120)

    def _loop(self) -> None:
        client = EncoderClient(self.url, api_key=self.key, retries=20, backoff=0.2, backoff_max=2, max_texts=64)
        session = requests.Session()
        t_start = time.monotonic()
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                if self.retrying:
                    r = client.post(ONE_TEXT)
                    self.retries += len(r.raw.retries.history) if r.raw.retries else 0
                else:
                    r = session.post(self.url + PREDICT, json=ONE_TEXT, headers=bearer(self.key), timeout=70)
                outcome = str(r.status_code)
                if r.status_code != 200:
                    self.failures.append(f"{t - t_start:6.1f} s: {r.status_code} {r.text[:160]}")
            except (requests.RequestException, EncoderError) as exc:
                outcome = type(exc).__name__
                self.failures.append(f"{t - t_start:6.1f} s: {type(exc).__name__}: {str(exc)[:160]}")
            self.outcomes[outcome] += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - t)
            self._stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - t)))

    def summary(self) -> str:
        sent = sum(self.outcomes.values())
        kind = "EncoderClient" if self.retrying else "plain kept-alive session"
        extra = f", {self.retries} retries inside the client" if self.retrying else ""
        return (f"{kind}: {sent} requests, {sent - self.outcomes['200']} failed "
                f"({dict(self.outcomes)}){extra}, slowest {self.slowest_s:.2f} s")


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
    """Both callers running for 3 s before the operation and 5 s after it; the operation's seconds."""
    plain, retrying = Caller(stack.url, keys[0], retrying=False), Caller(stack.url, keys[1], retrying=True)
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


def test_a_gateway_restart_fails_no_retried_request(stack: Stack, keys: tuple[str, str], report: Report) -> None:
    def restart() -> None:
        stack.project.compose("restart", "gateway", timeout=120)
        stack.project.wait_healthy(stack.gateway, 120)

    plain, retrying, took = under_callers(stack, keys, restart)
    report_operation(report, "docker compose restart gateway (one gateway: its port closed while it restarts)", took,
                     plain, retrying)
    assert not retrying.failures  # the plain caller's count is a figure (RELIABILITY.md), not a bound
