"""A dead TorchServe ends its container and the restart policy brings it back. Both replicas killed at
once: meanwhile the gateway answers JSON errors (502/503/504: unavailable, overloaded), then 200s again.
(One replica killed alone fails no request: tests/e2e/test_4b_hitless.py.)"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from gru_encoder.client import EncoderClient
from tests.e2e.gateway import PREDICT, bearer, error_of
from tests.e2e.report import Report
from tests.e2e.stack import REPLICAS, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

PID_FILE = "/tmp/.model_server.pid"  # TorchServe's frontend, written by its launcher in the container
EXITED_LINE = "gru-encoder-serve: TorchServe exited on its own"
OUTAGE_ANSWERS = {(502, "unavailable"), (503, "unavailable"), (503, "overloaded"), (504, "unavailable")}
WATCH_S = 300
INTERVAL_S = 0.25  # 4 requests a second: under the test's GATEWAY_RATE of 5r/s


@dataclass
class Watcher:
    """Sends a request through the gateway every 0.25 s from its first 200 on (`watching` is set then, and
    only then is TorchServe killed, so that a quick restart cannot fall before the watch began) until
    200s come back after an outage. Every answer must be a 200 or a JSON outage error."""

    url: str
    key: str
    watching: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    error: str = ""
    recovered_shapes: dict | None = None

    def run(self) -> None:
        try:
            self._watch()
        except Exception as exc:  # reported by the test, in the main thread
            self.error = f"{type(exc).__name__}: {exc}"

    def _watch(self) -> None:
        seen: set[tuple[int, str]] = set()
        t0 = time.monotonic()
        deadline = t0 + WATCH_S
        while time.monotonic() < deadline:
            try:
                r = requests.post(f"{self.url}{PREDICT}", json={"texts": ["he is tall"], "return": ["hidden"]},
                                  headers=bearer(self.key), timeout=70)
            except requests.RequestException as exc:
                raise AssertionError(f"the gateway itself failed while TorchServe restarted: {exc}") from exc
            if r.status_code == 200:
                if seen:
                    self.recovered_shapes = r.json()["shapes"]
                    self.lines.append(f"200 again after {time.monotonic() - t0:.1f} s: shapes {self.recovered_shapes}")
                    return
                if not self.watching.is_set():
                    t0 = time.monotonic()
                    self.watching.set()
            else:
                answer = (r.status_code, r.json().get("type", "?"))
                error_of(r, *answer)
                assert answer in OUTAGE_ANSWERS, f"not an outage answer: {r.status_code} {r.text}"
                if answer not in seen:
                    seen.add(answer)
                    self.lines.append(f"  {time.monotonic() - t0:5.1f} s: {answer[0]} {answer[1]}: {r.text.strip()}")
            time.sleep(INTERVAL_S)
        raise AssertionError(f"no outage seen, or no 200 again, within {WATCH_S} s: {sorted(seen)}")


def test_the_gateway_answers_json_while_both_replicas_are_killed_and_restarted(stack: Stack, report: Report) -> None:
    watcher = Watcher(stack.url, stack.api_key)
    thread = threading.Thread(target=watcher.run, name="outage-watcher", daemon=True)
    thread.start()
    assert watcher.watching.wait(60) or watcher.error, "the outage watcher got no 200 to start from within 60 s"
    assert not watcher.error, watcher.error
    for replica in REPLICAS:
        killed = stack.project.exec(replica, "sh", "-c", f'kill -KILL "$(cat {PID_FILE})"')
        assert killed.returncode == 0, f"could not kill TorchServe in {replica}: {killed.stderr}"
    # The project's client, sent now with the other key: its retries (502/503/504, connection errors,
    # backoff up to 5 s) carry it over the restart.
    ridden: dict = {}

    def client_call() -> None:
        try:
            client = EncoderClient(stack.url, api_key=stack.rate_key, retries=80, backoff=0.5, backoff_max=5, max_texts=64)
            t = time.monotonic()
            ridden["resp"] = client.post({"texts": ["he is tall"], "return": ["hidden"]})
            ridden["s"] = time.monotonic() - t
        except Exception as exc:
            ridden["error"] = f"{type(exc).__name__}: {exc}"

    rider = threading.Thread(target=client_call, name="client-over-restart", daemon=True)
    rider.start()
    thread.join(WATCH_S + 80)
    rider.join(120)
    assert not ridden.get("error"), ridden["error"]
    history = [h.status or type(h.error).__name__ for h in ridden["resp"].raw.retries.history]
    assert ridden["resp"].status_code == 200 and history, history
    report.promise(f"EncoderClient(api_key=...) sent right after the kill: 200 after {ridden['s']:.0f} s and "
                   f"{len(history)} retries ({', '.join(sorted(set(map(str, history))))})")
    report.promise("through the gateway, meanwhile (a request every 0.25 s):")
    for line in watcher.lines:
        report.promise(line)
    assert not thread.is_alive(), "the outage watcher is still running"
    assert not watcher.error, watcher.error
    assert watcher.recovered_shapes is not None


def test_the_container_ended_and_its_restart_policy_brought_it_back(stack: Stack, report: Report) -> None:
    project = stack.project
    for replica, container in zip(REPLICAS, stack.replicas):
        restarts = project.inspect(container)["RestartCount"]
        assert restarts >= 1, f"{replica}: the container did not end and restart"
        exited = [line for line in project.logs(container).splitlines() if EXITED_LINE in line]
        assert exited, f"{replica} should have ended with status 1 when TorchServe died (no '{EXITED_LINE}' in its log)"
        report.promise(f"{replica}: {exited[-1]}")
        report.promise(f"{replica}: the container ended (status 1) and was restarted by its policy: restart count {restarts}")


def test_both_healthy_again_and_serving(stack: Stack, report: Report) -> None:
    project = stack.project
    t0 = time.monotonic()
    for container in stack.replicas:
        project.wait_healthy(container, 300)
    project.wait_healthy(stack.gateway, 120)
    report.promise(f"both healthy again {time.monotonic() - t0:.0f} s later")
    r = stack.client().post({"texts": ["he is tall"], "return": ["hidden"]}, timeout=30)
    assert r.status_code == 200, r.text
    report.promise(f"after the restart, through the gateway: shapes {r.json()['shapes']}")
