"""What is particular to the machine the compose test runs on, kept apart from the test itself:
scripts/docker-bootstrap.sh (Docker installed and answering, the base image) and stopping a dockerd it
started. The build inputs this machine has on disk (a torch CPU wheel, local certificate authorities)
are staged by scripts/stage-build.sh, as for `make up-cpu` (tests/e2e/build.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from tests import ROOT
from tests.e2e.report import Report

BOOTSTRAP = ROOT / "scripts" / "docker-bootstrap.sh"


def bootstrap(report: Report) -> int | None:
    """Run the bootstrap, its announcements straight to the terminal; the pid of a dockerd it started."""
    problem = ""
    with report.uncaptured():
        try:
            # Installing packages or debootstrapping the base image takes minutes on a bare machine.
            result = subprocess.run(["bash", str(BOOTSTRAP)], stdout=subprocess.PIPE, text=True, timeout=1800)
            stdout = result.stdout
            if result.returncode != 0:
                problem = f"failed (exit status {result.returncode}): its message is above"
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout or ""
            problem = f"still running after {exc.timeout:.0f} s"
    started = _started_dockerd(stdout)
    if problem:
        if started:  # the caller of a failed bootstrap has no stack to take down first
            stop_dockerd(started, report)
        pytest.fail(f"{BOOTSTRAP.relative_to(ROOT)} {problem}", pytrace=False)
    return started


def _started_dockerd(stdout: str | bytes) -> int | None:
    """The bootstrap's answer: `STARTED_DOCKERD=<pid>`, or `STARTED_DOCKERD=` when dockerd was already up."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    for line in text.splitlines():
        if line.startswith("STARTED_DOCKERD="):
            pid = line.split("=", 1)[1].strip()
            return int(pid) if pid.isdigit() else None
    return None


def stop_dockerd(pid: int, report: Report, wait_s: float = 30) -> None:
    """SIGTERM to the dockerd the bootstrap started (it stops its containerd too), and wait for it."""
    report.terminal(f"[e2e] stopping the dockerd the bootstrap started (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    report.terminal(f"[e2e] dockerd (pid {pid}) still running {wait_s:.0f} s after SIGTERM: left running")
