"""What the compose test prints: progress and details to pytest's captured output (shown with -s and
for a failed test), and one line per promise, uncaptured, so that CI's log shows the stack at work."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

PREFIX = "[e2e] "
LONGEST = 600  # a promise line longer than this is cut: CI's log wants the gist, -s shows it whole


class Report:
    """Prints for the whole e2e package; the clock starts with the first fixture (bootstrap included)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def step(self, title: str) -> None:
        """A section of the run, with its time since the start: `=== [  38s] up`."""
        print(f"\n=== [{self.elapsed():4.0f}s] {title}", flush=True)

    def note(self, text: str) -> None:
        """A detail (captured: pytest shows it with -s and beside a failure)."""
        print(text, flush=True)

    def promise(self, line: str) -> None:
        """One checked promise, into CI's log (and into the captured output, shown beside a failure)."""
        if self.config.getoption("capture") != "no":  # with -s the terminal line below is the only copy
            self.note(line)
        self.terminal(PREFIX + (line if len(line) <= LONGEST else line[:LONGEST] + " ..."))

    def terminal(self, text: str) -> None:
        """Straight to the terminal, past pytest's capture (which would otherwise swallow it mid-test)."""
        with self.uncaptured():
            for line in text.splitlines() or [""]:
                self._write_line(line)

    @contextlib.contextmanager
    def uncaptured(self) -> Iterator[None]:
        """Output, this process's and its children's, goes to the terminal itself (on a line of its own)."""
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            writer = self.config.pluginmanager.get_plugin("terminalreporter")
            if writer is not None:
                writer.ensure_newline()
            yield

    def _write_line(self, line: str) -> None:
        writer = self.config.pluginmanager.get_plugin("terminalreporter")
        if writer is None:  # pytest run without its terminal plugin
            print(line, flush=True)
        else:
            writer.write_line(line)
