"""A real TorchServe process on free 127.0.0.1 ports, for the bench, the reliability scripts and the tests."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from typing import Any, Callable

import requests

from gru_encoder.host.settings import RESOLVED_ENV, ServingSettings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_predicting(proc: subprocess.Popen, url: str, name: str, output: Callable[[], str], timeout: float,
                          interval: float = 0.2, method: str = "POST") -> bool:
    """Until a real prediction (`{"texts": ["ping"]}` posted to `url`; or a GET of a readiness route such as
    the gateway's /health) answers 200: True then, False past `timeout`; RuntimeError with the end of the
    server's output if its process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{output()[-3000:]}")
        try:
            body = {"json": {"texts": ["ping"]}} if method == "POST" else {}
            if requests.request(method, url, timeout=5, **body).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(interval)
    return False


class TorchServe:
    """A real TorchServe on free 127.0.0.1 ports serving one .mar, started as `make serve` starts it
    (python -m gru_encoder.host.serve) with its own TMPDIR (pid file, sockets) and logs under `workdir`;
    gateway="local" puts the gateway's nginx in front, as `make serve` does (url is then the gateway's).

    `ts_config`: another fixed-settings file instead of config.properties; `settings`: serving settings
    (gru_encoder/host/settings.py) to override, e.g. job_queue_size=50."""

    def __init__(self, model_store: Path, workdir: Path, mar: str = "gru_encoder.mar", ts_config: Path | None = None, **settings: Any):
        self.workdir = workdir
        if settings.get("gateway") == "local":  # the gateway's nginx on the inference port, TorchServe behind it
            settings.setdefault("torchserve_port", free_port())
        self.ports = {"inference": free_port(), "management": free_port(), "metrics": free_port()}
        self.grpc_ports = {"inference": free_port(), "management": free_port()}
        # The same settings as the bench's limit and peer and the fault scripts read: GRU_ENCODER_* of this
        # environment, with this server's own ports, store and logs on top.
        self.settings = ServingSettings.from_env(**{
            "port": self.ports["inference"], "management_port": self.ports["management"], "metrics_port": self.ports["metrics"],
            "grpc_port": self.grpc_ports["inference"], "grpc_management_port": self.grpc_ports["management"],
            "model_store": str(model_store), "mar": mar, "ts_config": str(ts_config or ROOT / "config.properties"),
            "log_dir": str(workdir / "logs"), **settings,
        })
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        # TorchServe keeps its pid file, sockets and unpacked models under TMPDIR/TEMP: one per server.
        env = {k: v for k, v in os.environ.items() if k != RESOLVED_ENV}  # the flags below say it all
        self.env = {**env, "TMPDIR": str(workdir / "tmp"), "TEMP": str(workdir / "tmp")}
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(self.settings).items()]
        return [sys.executable, "-m", "gru_encoder.host.serve", *flags]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def torchserve_url(self) -> str:
        """TorchServe itself (behind the local gateway, its own port; else the same as url)."""
        return self.settings.torchserve_url()

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    def launch(self) -> "TorchServe":
        """Start TorchServe and return at once; its output is appended to torchserve.out, so a restarted
        server keeps the earlier run's log."""
        self.log = open(self.workdir / "torchserve.out", "ab")
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def start(self, timeout: float = 180.0) -> "TorchServe":
        """Start TorchServe and wait until the model answers a real request."""
        self.launch()
        # Ready = the model answers (/ping is healthy even before the worker has loaded).
        if wait_until_predicting(self.proc, f"{self.url}/predictions/gru_encoder", "TorchServe", self.output, timeout):
            return self
        self.stop()
        raise TimeoutError(f"TorchServe not ready in {timeout}s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return (self.workdir / "torchserve.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the launcher stops TorchServe's frontend, which stops its workers
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()
        self.proc = None
