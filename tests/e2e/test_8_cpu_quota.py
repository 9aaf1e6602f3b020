"""Threads follow the CPU quota: the served image under `docker run --cpus N` (read-only root, as in the
Kubernetes manifests), each worker's own log line saying how many torch threads it runs. With
torch_threads 0 (the default) that is the quota's CPUs divided by the workers, at least 1."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.project import IMAGES, Project, _NAME
from tests.e2e.report import Report

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


@pytest.mark.parametrize(("cpus", "workers", "threads"), [(1, 1, 1), (1, 2, 1), (2, 1, 2), (2, 2, 1)])
def test_each_worker_runs_the_threads_its_cpu_quota_allows(project: Project, report: Report, cpus: int, workers: int,
                                                           threads: int) -> None:
    name = f"{_NAME}-threads-{cpus}-{workers}"
    project.docker("rm", "-f", name, check=False)
    project.docker("run", "-d", "--name", name, "--cpus", str(cpus), "--network", "none", "--read-only",
                   "--tmpfs", "/tmp", "--tmpfs", "/home/model-server/logs", "-e", f"GRU_ENCODER_WORKERS={workers}",
                   IMAGES["IMAGE"])
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while len(lines) < workers and time.monotonic() < deadline:
            time.sleep(2)
            lines = re.findall(r"gru_encoder loaded on (\w+) \(threads (\d+)\)", project.docker("logs", name, merge=True).stdout)
        healthy = project.docker("exec", name, "python3", "/usr/local/bin/gru-encoder-healthcheck", check=False)
        report.promise(f"--cpus {cpus}, {workers} worker(s): threads {[int(t) for _, t in lines]}, {healthy.stdout.strip()}")
        assert lines == [("cpu", str(threads))] * workers
        assert healthy.returncode == 0, healthy.stdout
    finally:
        project.docker("rm", "-f", name, check=False)
