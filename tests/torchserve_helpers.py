"""Test helpers: a fake TorchServe context for in-process handler tests, and a real TorchServe process."""

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
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


class FakeContext:
    """The parts of ts.context.Context the handler uses, recording what it sets per request."""

    def __init__(self, model_dir: Path, model_yaml_config: dict | None = None, request_headers: list[dict[str, str]] | None = None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 8}
        self.manifest = {"model": {"modelName": "gru_encoder", "modelVersion": "1.0"}}
        cfg = model_yaml_config
        if cfg is None:
            cfg = yaml.safe_load((ROOT / "handlers" / "model-config.yaml").read_text())
        self.model_yaml_config = cfg
        self.status: dict[int, int] = {}
        self.content_type: dict[int, str] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.request_headers = request_headers or []  # per request, names as the client sent them

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_headers[idx] if idx < len(self.request_headers) else {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = code

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type[idx] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.headers.setdefault(idx, {})[key] = value


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
