"""The compose test's time limit: past it (or on SIGTERM) pytest is interrupted as by Ctrl-C, which
still runs the fixtures' teardown, so the stack is taken down and a dockerd started here stopped."""

from __future__ import annotations

import os
import signal
from types import FrameType

from tests.e2e.report import Report

ENV = "COMPOSE_TEST_TIMEOUT"
DEFAULT_S = 2400  # a cold run (apt, dockerd, every image built) took about 9 min on 2 cores


class TimeBudget:
    def __init__(self, report: Report):
        raw = os.environ.get(ENV, str(DEFAULT_S))
        if not raw.isdigit() or int(raw) < 60:
            raise ValueError(f"{ENV}={raw!r}: seconds for the whole compose test, at least 60 (default {DEFAULT_S})")
        self.seconds = int(raw)
        self.report = report
        self._previous: dict[int, object] = {}
        self.interrupted = False  # set when the budget ran out or SIGTERM came

    def start(self) -> None:
        for sig in (signal.SIGALRM, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._interrupt)
        signal.alarm(self.seconds)

    def stop(self) -> None:
        """Disarm; called first by every teardown, so that the teardown itself is never interrupted."""
        signal.alarm(0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        why = f"over {ENV}={self.seconds} s" if signum == signal.SIGALRM else "SIGTERM"
        self.interrupted = True
        self.stop()
        self.report.terminal(f"[e2e] {why}: interrupting the compose test; the teardown takes the stack down")
        raise KeyboardInterrupt(f"compose test {why}")
