"""The docker compose stack, for real, for every test in tests/e2e: the machine bootstrapped, the images
built, the stack brought up once and healthy; then torn down after the package's last test whatever
happened (with the stack's last logs when something failed), within COMPOSE_TEST_TIMEOUT.

The test files run in the order of their numbers, against the one stack: the gateway's refusals (before
up), what it serves, what is isolated, the kill and restart, Locust, and the stop last.

Settings: COMPOSE_TEST_TIMEOUT (s, default 2400), COMPOSE_TEST_LOADTEST=0 (skip Locust),
COMPOSE_TEST_RMI=1 (remove the test's images at the end), TORCH_WHEEL_FILE (a CPU torch wheel to build
with), RUN_DIR (serve an existing run instead of the smoke one), BASE_IMAGE.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.budget import TimeBudget
from tests.e2e.build import build, remove_store
from tests.e2e.machine import bootstrap, stop_dockerd
from tests.e2e.project import Project
from tests.e2e.reference import Reference, reference
from tests.e2e.report import Report
from tests.e2e.stack import Stack, bring_up


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: the real docker compose stack, through its gateway (tests/e2e)")


@pytest.fixture(scope="package")
def report(pytestconfig: pytest.Config) -> Report:
    return Report(pytestconfig)


@pytest.fixture(scope="package")
def time_budget(report: Report) -> Iterator[TimeBudget]:
    budget = TimeBudget(report)
    budget.start()
    try:
        yield budget
    finally:
        budget.stop()


@pytest.fixture(scope="package")
def docker_host(time_budget: TimeBudget, report: Report) -> Iterator[Project]:
    """scripts/docker-bootstrap.sh, then the compose project; a dockerd it started is stopped at the end."""
    report.step("docker host (scripts/docker-bootstrap.sh)")
    started = bootstrap(report)
    try:
        project = Project(report)
        report.note(f"compose: {project.version()}")
        yield project
    finally:
        time_budget.stop()
        if started:
            stop_dockerd(started, report)


@pytest.fixture(scope="package")
def served_run(request: pytest.FixtureRequest) -> Path:
    """RUN_DIR (a trained run), else the test session's smoke run (tests/conftest.py)."""
    if os.environ.get("RUN_DIR"):
        run_dir = Path(os.environ["RUN_DIR"]).resolve()
        if not (run_dir / "config.json").is_file():
            pytest.fail(f"RUN_DIR={run_dir} has no config.json: point it at a run folder (make train writes runs/default)",
                        pytrace=False)
        return run_dir
    return request.getfixturevalue("smoke_run")


@pytest.fixture(scope="package")
def project(request: pytest.FixtureRequest, time_budget: TimeBudget, docker_host: Project, served_run: Path,
            report: Report) -> Iterator[Project]:
    """The test's images, built; at the end, whatever happened: the stack's last logs if anything failed,
    `down`, the archive's store and the untagged images of earlier runs removed."""
    project = docker_host
    failed_before = request.session.testsfailed
    ok = False
    try:
        if project.daemon_answers():
            project.down(timeout_s=10)  # what a killed earlier run left
        report.step("build")
        build(project, served_run, report)
        yield project
        ok = request.session.testsfailed == failed_before and not time_budget.interrupted
    finally:
        time_budget.stop()
        if project.daemon_answers():
            if not ok:
                report.terminal("\n--- last logs of the stack ---\n" + project.last_logs())
            report.step("tearing down")
            report.note(project.down())
            project.prune_images(remove_tagged=os.environ.get("COMPOSE_TEST_RMI") == "1")
        remove_store()
        # On a line of its own: pytest's progress dots may still be open on the current one.
        report.terminal(f"\n[e2e] compose test {'passed' if ok else 'FAILED'}: {report.elapsed():.0f} s, the stack torn down")


@pytest.fixture(scope="package")
def stack(project: Project, tmp_path_factory: pytest.TempPathFactory, report: Report) -> Stack:
    report.step("up")
    return bring_up(project, tmp_path_factory.mktemp("secrets"), report)


@pytest.fixture(scope="package")
def ref(served_run: Path, project: Project) -> Reference:
    """The served run's encoder and handler code, in-process, with the container's serving settings."""
    return reference(served_run, project.env)
