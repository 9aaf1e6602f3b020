"""The bench's peer servers (LitServe, Ray Serve), each its own process group on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.cpu import tree
from gru_encoder.host.settings import ServingSettings
from loadtests.torchserve_process import ROOT, free_port, wait_until_predicting

SETTINGS = ServingSettings.from_env()


@dataclass(frozen=True)
class PeerSettings:
    """What every peer takes from TorchServe's serving settings (gru_encoder/host/settings.py), defined once so
    that the peers batch, spread and thread exactly as TorchServe does."""

    run_dir: str = field(default="runs/default", metadata={"help": "run folder written by training"})
    port: int = 8000
    max_batch_size: int = field(default=SETTINGS.batch_size, metadata={"help": "= the serving settings' batch_size"})
    batch_timeout_ms: float = field(default=SETTINGS.max_batch_delay_ms, metadata={"help": "= max_batch_delay_ms"})
    workers: int = field(default=SETTINGS.workers, metadata={"help": "worker processes or replicas (= workers)"})
    torch_threads: int = field(default=SETTINGS.torch_threads, metadata={"help": "0 = this process's CPUs / workers, as the handler"})

# name -> (module run with -m, request path). Both wrap the same EncoderService with the same settings.
PEERS = {
    "litserve": ("loadtests.litserve_peer", "/predict"),
    "rayserve": ("loadtests.rayserve_peer", "/predict"),
}


class PeerServer:
    """One peer started as `python -m <module> --run-dir ... --port ...`, ready when a real request answers 200."""

    def __init__(self, name: str, run_dir: str, workdir: Path):
        self.name, self.run_dir, self.workdir = name, run_dir, workdir
        self.module, self.path = PEERS[name]
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "PeerServer":
        self.log = open(self.workdir / f"{self.name}.out", "wb")
        cmd = [sys.executable, "-m", self.module, "--run-dir", self.run_dir, "--port", str(self.port)]
        if self.name == "rayserve":  # Ray's session folder (its sockets too: the path must stay short)
            cmd += ["--temp-dir", str(self.workdir / "ray")]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_until_predicting(self.proc, self.url + self.path, self.name, self.output, timeout, interval=0.5):
            return self
        self.stop()
        raise TimeoutError(f"{self.name} not ready in {timeout:g}s: {self.output()[-3000:]}")

    def output(self) -> str:
        return (self.workdir / f"{self.name}.out").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (the peer shuts its server down), then SIGKILL to whatever of its tree lingers."""
        if self.proc is None:
            return
        family = tree(self.proc.pid)  # now: once the leader is gone its children belong to init
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        for pid in family[1:]:  # children that outlived the leader (Ray's actors run in sessions of their own)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        self.proc = None
