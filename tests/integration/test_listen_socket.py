"""The gateway's published socket held outside nginx (docker/gateway/listen_socket.py): the gateway's own
entrypoint and the host's nginx, without Docker. While no nginx runs, a connection to the held socket
waits in its queue and the next nginx answers it; without a holder the same connection is refused. This is
what makes `docker compose restart gateway` hitless (tests/e2e/test_4b_hitless.py shows it on compose)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from gru_encoder.host.gateway import nginx_binary
from tests import ROOT

GATEWAY = ROOT / "docker" / "gateway"
pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (make nginx)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """The gateway's entrypoint in the foreground, keyless, its upstream nowhere: nginx answers its own
    routes (a 404 JSON error for an unknown path), which is all a restart needs."""

    def __init__(self, tmp: Path, port: int, holder: str = "") -> None:
        self.env = {"PATH": os.environ["PATH"] + ":/usr/sbin", "HOME": str(tmp), "GATEWAY_CONF_DIR": str(tmp / "conf"),
                    "GATEWAY_TEMPLATE": str(GATEWAY / "nginx.conf.template"), "GATEWAY_AUTH": "off",
                    "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_STATUS_LISTEN": f"unix:{tmp / 'status.sock'}",
                    "GATEWAY_UPSTREAM": "127.0.0.1:9", "GATEWAY_WORKERS": "1", "GATEWAY_RELEASE_POLL": "0",
                    "GATEWAY_RELEASE_FILE": str(tmp / "no-release.conf"), "GATEWAY_LISTEN_HOLDER": holder}
        self.log = tmp / "gateway.log"
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(["bash", str(GATEWAY / "entrypoint.sh")], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:  # up once nginx answers (a connection to a held socket waits for it)
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()[-2000:]
            try:
                if requests.get(self.url + "/nowhere", timeout=2).status_code == 404:
                    return
            except requests.RequestException:
                time.sleep(0.05)

    def stop(self) -> None:
        """As docker stop does: SIGQUIT (the image's STOPSIGNAL), nginx finishes what is in flight and exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGQUIT)
        assert self.process.wait(15) == 0

    def kill(self) -> None:
        """A test's teardown: whatever still runs, gone (its workers exit with their master)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def gateways():
    """Gateway(...) made through this, killed at teardown if a test left it running."""
    made: list[Gateway] = []

    def make(*args, **kwargs) -> Gateway:
        made.append(Gateway(*args, **kwargs))
        return made[-1]

    yield make
    for gateway in made:
        gateway.kill()


@pytest.fixture
def holder(tmp_path: Path):
    """listen_socket.py hold on a free port of the loopback, under a name of this test's own."""
    port, name = free_port(), f"gru-encoder-test-{os.getpid()}-{tmp_path.name}"
    process = subprocess.Popen(["python3", str(GATEWAY / "listen_socket.py"), "hold", f"127.0.0.1:{port}", name],
                               stderr=subprocess.PIPE, text=True)
    assert "holding" in process.stderr.readline()
    yield port, name
    process.terminate()
    assert process.wait(10) == 0  # SIGTERM is a clean stop


def answer_of(url: str, result: list) -> None:
    try:
        result.append(requests.get(url + "/nowhere", timeout=20).status_code)
    except requests.RequestException as exc:
        result.append(type(exc).__name__)


def test_a_connection_while_no_nginx_runs_waits_for_the_next_one(tmp_path: Path, holder: tuple[int, str],
                                                                 gateways) -> None:
    port, name = holder
    gateway = gateways(tmp_path, port, holder=name)
    gateway.start()
    assert "using inherited sockets" in gateway.log.read_text()  # nginx took the held socket, bound none
    assert requests.get(gateway.url + "/nowhere", timeout=5).status_code == 404
    gateway.stop()
    result: list = []
    waiting = threading.Thread(target=answer_of, args=(gateway.url, result))
    waiting.start()  # connects while nothing runs
    time.sleep(1.0)
    assert result == [], "answered while no nginx ran"
    gateway.start()
    waiting.join(20)
    gateway.stop()
    assert result == [404], result  # the next nginx's answer, not a refusal


def test_without_the_holder_the_same_connection_is_refused(tmp_path: Path, gateways) -> None:
    gateway = gateways(tmp_path, free_port())
    gateway.start()
    assert "using inherited sockets" not in gateway.log.read_text()
    gateway.stop()
    result: list = []
    answer_of(gateway.url, result)
    assert result == ["ConnectionError"], result


def test_restarts_under_steady_callers_fail_nothing(tmp_path: Path, holder: tuple[int, str], gateways) -> None:
    """Three restarts, each with 0.5 s without any nginx, under two callers sending every 20 ms: one on a new
    connection each time, no retry (none may be refused or reset), and one on a kept-alive session. An idle
    kept-alive connection is closed when its nginx stops, as on any HTTP server's graceful stop; a request
    sent on it in that very instant gets a reset, and HTTP has the client retry it (RFC 9112, 9.3.1), once and
    only for that: the kept-alive caller does (never on a refused connection), and every answer is a 404."""
    port, name = holder
    gateway = gateways(tmp_path, port, holder=name)
    gateway.start()
    fresh: Counter = Counter()
    kept: Counter = Counter()
    slowest = [0.0]
    stop = threading.Event()

    def call(outcomes: Counter, session: requests.Session, headers: dict[str, str]) -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                r = session.get(gateway.url + "/nowhere", headers=headers, timeout=20)
                outcomes[r.status_code] += 1
                outcomes["retried"] += len(r.raw.retries.history) if r.raw.retries else 0
            except requests.RequestException as exc:  # named in full: the assertion shows which it was
                outcomes[f"{type(exc).__name__}: {exc}"[:200]] += 1
            slowest[0] = max(slowest[0], time.monotonic() - t)
            time.sleep(0.02)

    kept_alive = requests.Session()
    retry_a_closed_connection = Retry(total=1, connect=0, read=1, status=0, other=0, allowed_methods={"GET"})
    kept_alive.mount("http://", HTTPAdapter(max_retries=retry_a_closed_connection))
    callers = [threading.Thread(target=call, args=(fresh, requests.Session(), {"Connection": "close"})),
               threading.Thread(target=call, args=(kept, kept_alive, {}))]
    for caller in callers:
        caller.start()
    try:
        for _ in range(3):
            time.sleep(0.5)
            gateway.stop()
            time.sleep(0.5)
            gateway.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
        gateway.stop()
    assert set(fresh) <= {404, "retried"} and fresh[404] > 50 and fresh["retried"] == 0, fresh
    assert set(kept) <= {404, "retried"} and kept[404] > 50 and kept["retried"] <= 3, kept  # at most one a restart
    assert slowest[0] < 3.0, slowest  # each wait is the 0.5 s without nginx and its start, never a timeout


def test_every_nginx_worker_gets_the_held_socket_non_blocking(tmp_path: Path, holder: tuple[int, str], gateways) -> None:
    """nginx takes an inherited socket as it is: a blocking one leaves a worker that lost the race for a connection
    to the other blocked in accept(), and the requests of every connection it holds wait with it (one hung over
    70 s on compose). Two workers, bursts of new connections; then each worker's copy is non-blocking and none
    waits in accept()."""
    port, name = holder
    gateway = gateways(tmp_path, port, holder=name)
    gateway.env["GATEWAY_WORKERS"] = "2"
    gateway.start()

    def get() -> None:
        requests.get(gateway.url + "/nowhere", headers={"Connection": "close"}, timeout=10)

    for _ in range(20):
        burst = [threading.Thread(target=get) for _ in range(8)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(15)
    time.sleep(0.3)
    assert gateway.process is not None
    workers = [pid for pid in Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children").read_text().split()
               if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: worker process")]
    assert len(workers) == 2, workers
    for pid in workers:
        assert os.readlink(f"/proc/{pid}/fd/3").startswith("socket:")  # the inherited listener (NGINX="3;")
        flags = next(line for line in Path(f"/proc/{pid}/fdinfo/3").read_text().splitlines() if line.startswith("flags:"))
        assert int(flags.split()[1], 8) & os.O_NONBLOCK, (pid, flags)
        assert Path(f"/proc/{pid}/wchan").read_text() != "inet_csk_accept", pid
    gateway.stop()


def test_check_sees_the_held_socket_and_names_a_missing_holder(holder: tuple[int, str]) -> None:
    port, name = holder
    check = subprocess.run(["python3", str(GATEWAY / "listen_socket.py"), "check", name], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0 and f"('127.0.0.1', {port})" in check.stdout, check
    missing = subprocess.run(["python3", str(GATEWAY / "listen_socket.py"), "check", name + "-none"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert missing.returncode != 0 and "no holder answers" in missing.stderr


def test_the_gateway_stops_when_its_holder_is_gone(tmp_path: Path, gateways) -> None:
    """gateway-port restarted leaves the gateway in a dead network: it stops, and its restart policy starts it
    in the new one (tests/e2e/test_4b_hitless.py)."""
    port, name = free_port(), f"gru-encoder-test-{os.getpid()}-gone"
    hold = subprocess.Popen(["python3", str(GATEWAY / "listen_socket.py"), "hold", f"127.0.0.1:{port}", name],
                            stderr=subprocess.DEVNULL)
    gateway = gateways(tmp_path, port, holder=name)
    try:
        gateway.start()
    finally:
        hold.terminate()
        hold.wait(10)
    assert gateway.process is not None and gateway.process.wait(10) == 0  # stopped gracefully, within ~2 s
    assert "the holder of the published socket (" + name + ") is gone" in gateway.log.read_text()
