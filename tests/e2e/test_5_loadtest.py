"""The loadtest profile: a Locust master and 2 workers against http://torchserve:8080 on the internal
network (not through the gateway: it measures the model server), briefly. Generous thresholds: this
checks the wiring (DNS, master and workers, the locustfile's own checks), not the speed of the machine."""

from __future__ import annotations

import re

import pytest

from tests.e2e.build import LOADTEST_ENV, loadtest_on
from tests.e2e.report import Report
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

LOCUST_ARGS = "--headless -u 4 -r 4 -t 15s --expect-workers 2 --max-p95-ms 10000 --only-summary"


@pytest.mark.skipif(not loadtest_on(), reason=f"{LOADTEST_ENV}=0")
def test_locust_master_and_2_workers_run_15_s_and_pass(stack: Stack, report: Report) -> None:
    project = stack.project
    project.settings["LOCUST_ARGS"] = LOCUST_ARGS
    try:
        project.compose("up", "-d", "--no-build", "--scale", "locust-worker=2", "locust-master", "locust-worker",
                        timeout=300)
        master = project.container("locust-master")
        exit_code = project.docker("wait", master, timeout=180).stdout.strip()
    finally:
        project.settings.pop("LOCUST_ARGS")
    log = project.compose("logs", "--no-color", "locust-master", timeout=60).stdout.splitlines()
    start = next((i for i, line in enumerate(log) if re.search(r"Response time percentiles|Type +Name", line)), len(log))
    report.note("\n".join(log[start:][-25:]))
    report.promise(f"loadtest profile (locust master + 2 workers, 15 s): locust master exit code {exit_code}")
    assert exit_code == "0", "locust master failed:\n" + "\n".join(log[-25:])
