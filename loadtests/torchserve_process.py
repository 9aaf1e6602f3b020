"""A real TorchServe process on free 127.0.0.1 ports, for the bench, the reliability scripts and the tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TorchServe:
    """A real TorchServe on free 127.0.0.1 ports, serving one .mar, configured like `make serve`."""

    def __init__(self, model_store: Path, workdir: Path, mar: str = "gru_encoder.mar", config_properties: Path | None = None):
        self.workdir = workdir
        self.ports = {"inference": free_port(), "management": free_port(), "metrics": free_port()}
        self.grpc_ports = {"inference": free_port(), "management": free_port()}
        config = (config_properties or ROOT / "config.properties").read_text()
        for name, port in self.ports.items():
            config = re.sub(rf"^{name}_address=.*$", f"{name}_address=http://127.0.0.1:{port}", config, flags=re.M)
        for name, port in self.grpc_ports.items():
            config = re.sub(rf"^grpc_{name}_port=.*$", f"grpc_{name}_port={port}", config, flags=re.M)
        config = re.sub(r"^model_store=.*$", f"model_store={model_store}", config, flags=re.M)
        config = re.sub(r"^load_models=.*$", f"load_models={mar}", config, flags=re.M)
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.properties"
        self.config_path.write_text(config)
        # TorchServe keeps its pid file, sockets and unpacked models under TMPDIR/TEMP: one per server.
        self.env = {
            **os.environ,
            "TMPDIR": str(workdir / "tmp"),
            "TEMP": str(workdir / "tmp"),
            "LOG_LOCATION": str(workdir / "logs"),
            "METRICS_LOCATION": str(workdir / "logs"),
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    def launch(self) -> "TorchServe":
        """Start TorchServe and return at once; its output is appended to torchserve.out, so a restarted
        server keeps the earlier run's log."""
        self.log = open(self.workdir / "torchserve.out", "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "torchserve"), "--start", "--foreground", "--ncs", "--ts-config", str(self.config_path)],
            cwd=self.workdir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def start(self, timeout: float = 180.0) -> "TorchServe":
        """Start TorchServe and wait until the model answers a real request."""
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:  # ready = the model answers (/ping is healthy even before the worker has loaded)
                r = requests.post(f"{self.url}/predictions/gru_encoder", json={"texts": ["ping"]}, timeout=5)
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"TorchServe not ready in {timeout}s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return (self.workdir / "torchserve.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        subprocess.run([str(VENV_BIN / "torchserve"), "--stop"], cwd=self.workdir, env=self.env, capture_output=True, timeout=60)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()
        self.proc = None
