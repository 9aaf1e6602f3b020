"""Stop: the gateway first (SIGQUIT: nginx finishes the requests in flight), then the holder of its port
(SIGQUIT too, the image's), then TorchServe (SIGTERM, forwarded to its frontend by the container's
launcher); each exits 0, well within the 30 s grace period.
Last of the package: nothing runs after it."""

from __future__ import annotations

import time

import pytest

from tests.e2e.report import Report
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


@pytest.mark.parametrize("service", ["gateway", "gateway-port", "torchserve"])
def test_stops_cleanly(service: str, stack: Stack, report: Report) -> None:
    project = stack.project
    container = project.container(service)  # the current one: the hitless tests recreate TorchServe's
    t0 = time.monotonic()
    project.compose("stop", "--timeout", "30", service, timeout=120)
    exit_code = project.inspect(container)["State"]["ExitCode"]
    report.promise(f"{service} stopped in {time.monotonic() - t0:.0f} s, exit code {exit_code}")
    if service == "torchserve":
        for line in [line for line in project.logs(container).splitlines() if "gru-encoder-serve:" in line][-2:]:
            report.promise(line)
    assert exit_code == 0, f"{service} should stop cleanly (exit code {exit_code})"
