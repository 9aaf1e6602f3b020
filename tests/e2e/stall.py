"""Where a request that hangs is held: a snapshot taken while it still hangs, for the failure's report.

A request that never gets an answer leaves nothing behind once it times out: nginx logs a request only
when it ends, and the stack is torn down after the run. So a watcher takes, once, as soon as a request has
waited STALL_S: the gateway's log lines of that request id (none while nginx has not finished it), the
published port's connections on both sides of Docker's forwarding (the host's, and those in gateway-port's
network namespace, with each listener's accept queue), the state of every process in the gateway
container, and each TorchServe replica's health. Run as root (CI), it reads the container's network
namespace with nsenter; otherwise that part says why it is missing.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Self

import pytest

from tests.e2e.stack import Stack

STALL_S = 15.0  # over this, a prediction of the test's callers (a few ms when all is well) is hanging


def _run(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return (result.stdout + result.stderr).strip() or f"(nothing, exit status {result.returncode})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({' '.join(cmd[:3])}...: {exc})"


def snapshot(stack: Stack, request_id: str) -> str:
    """What the stack shows of a hanging request, as text."""
    project = stack.project
    gateway = project.container("gateway")
    holder = project.container("gateway-port")
    pid = str(project.inspect(holder)["State"]["Pid"])
    logs = project.logs(gateway).splitlines()
    mine = [line for line in logs if request_id in line]
    parts = [
        f"--- the gateway's log lines of {request_id}: {len(mine)}", *mine,
        "--- the gateway's last log lines", *logs[-8:],
        f"--- the host's connections to 127.0.0.1:{stack.port}",
        _run(["ss", "-tnoi", "state", "all", f"( dport = :{stack.port} or sport = :{stack.port} )"]),
        "--- gateway-port's network (the gateway's too): listeners (Recv-Q: the accept queue) and connections",
        _run(["nsenter", "-t", pid, "-n", "ss", "-tanoi"]),
        "--- the gateway container's processes",
        _run(["docker", "top", gateway, "-eo", "pid,stat,wchan:24,etimes,args"]),
        "--- the replicas' health",
    ]
    for container in stack.replicas:
        state = project.inspect(container)["State"]
        parts.append(f"{project.name(container)}: {state['Status']}, {(state.get('Health') or {}).get('Status')}")
    return "\n".join(parts)


class StallWatch:
    """While running, asks `in_flight()` every second for (request id, seconds waited) of each caller's
    current request; the first to wait STALL_S gets a snapshot (one per run: the stack is the same)."""

    def __init__(self, stack: Stack, in_flight: Callable[[], list[tuple[str, float]]]):
        self.stack, self.in_flight = stack, in_flight
        self.found: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stall-watch", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _loop(self) -> None:
        while not self._stop.wait(1.0) and not self.found:
            for request_id, waited in self.in_flight():
                if waited > STALL_S:
                    t = time.monotonic()
                    try:
                        text = snapshot(self.stack, request_id)
                    # A diagnosis must not fail the test's own result (the project's docker calls fail with pytest.fail).
                    except (OSError, subprocess.SubprocessError, LookupError, ValueError, pytest.fail.Exception) as exc:
                        text = f"(no snapshot: {type(exc).__name__}: {exc})"
                    self.found = (f"{request_id} had waited {waited:.0f} s (snapshot taken in "
                                  f"{time.monotonic() - t:.1f} s):\n{text}")
                    break
