"""The running stack the tests look at: where the gateway listens, the test's keys and limits, the two
containers; and how it is brought up."""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.gateway import Gateway
from tests.e2e.project import Project
from tests.e2e.report import Report

# The gateway's settings in the test: a low rate, so that a 429 comes after a few requests; the
# watcher of the restart test sends 4 requests a second, under it.
GATEWAY_SETTINGS = {"GATEWAY_RATE": "5r/s", "GATEWAY_BURST": "10", "GATEWAY_MAX_BODY_SIZE": "2m",
                    "GATEWAY_PROXY_TIMEOUT": "60"}
# Every container's log rotates at LOG_MAX_SIZE, LOG_MAX_FILE files kept (docker-compose.yml): small
# here, so that the test can fill the gateway's past it.
LOG_SETTINGS = {"LOG_MAX_SIZE": "1m", "LOG_MAX_FILE": "3"}
MANAGEMENT_PORT = 8081  # TorchServe's, on its container's loopback only
REPLICAS = ("torchserve", "torchserve-2")  # TorchServe's two services (docker-compose.yml)


@dataclass
class Stack:
    project: Project
    port: int  # the gateway's, published on 127.0.0.1
    key_file: Path  # the secret file, one key per line (appended to by the rotation test)
    api_key: str  # for the checks
    rate_key: str  # spent on the rate limit's 429
    torchserve: str  # container ids: the first TorchServe replica, the gateway, the holder of its port
    gateway: str
    gateway_port: str
    healthy_after_s: float
    management_port_busy_before: bool  # a developer's own TorchServe may hold 127.0.0.1:8081
    added_keys: list[str] = field(default_factory=list)  # keys appended to key_file since (rotation)

    @property
    def replicas(self) -> list[str]:
        """Both TorchServe replicas' current container ids (a recreated replica has a new one)."""
        return [self.project.container(service) for service in REPLICAS]

    @property
    def keys(self) -> list[str]:
        return [self.api_key, self.rate_key, *self.added_keys]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> Gateway:
        return Gateway(self.url, key if key is not None else self.api_key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    """Does anything accept a TCP connection there? (only 127.0.0.1 and the stack's own containers)"""
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((host, port)) == 0


def write_key_file(folder: Path) -> tuple[Path, list[str]]:
    """Two keys in a secret file as `make up` writes one: a 0700 folder, a 0644 file (the gateway's uid
    1001 reads it through the secret mount)."""
    folder.chmod(0o700)
    keys = [secrets.token_urlsafe(32), secrets.token_urlsafe(32)]
    path = folder / "api_key"
    path.write_text("# compose test keys\n" + "".join(k + "\n" for k in keys))
    path.chmod(0o644)
    return path, keys


def bring_up(project: Project, secrets_dir: Path, report: Report) -> Stack:
    """`up gateway` and both TorchServe replicas (the gateway once the first is healthy: depends_on), on
    free ports of the host's loopback, and wait until every health check (real predictions) passes."""
    key_file, (api_key, rate_key) = write_key_file(secrets_dir)
    port = free_port()
    project.settings.update(GATEWAY_SETTINGS, **LOG_SETTINGS, GATEWAY_API_KEY_FILE=str(key_file), GATEWAY_API_KEYS="",
                            GATEWAY_BIND="127.0.0.1", GATEWAY_PORT=str(port), LOCUST_PORT=str(free_port()),
                            PROMETHEUS_PORT=str(free_port()))
    report.note(f"keys: {key_file} (2 keys); " + " ".join(f"{k}={v}" for k, v in GATEWAY_SETTINGS.items()))
    busy = port_open("127.0.0.1", MANAGEMENT_PORT)
    t_up = time.monotonic()
    result = project.compose("up", "-d", "--no-build", "gateway", *REPLICAS, timeout=400)
    report.note((result.stdout + result.stderr).strip())
    torchserve, gateway = project.container("torchserve"), project.container("gateway")
    gateway_port = project.container("gateway-port")
    for replica in REPLICAS:
        project.wait_healthy(project.container(replica), 300)
    project.wait_healthy(gateway, 120)
    return Stack(project, port, key_file, api_key, rate_key, torchserve, gateway, gateway_port,
                 time.monotonic() - t_up, busy)
