"""Several TorchServe replicas on Docker Swarm, behind the gateway, under real requests
(reliability/swarm.py, with the images this package built): requests spread over every replica, a
rolling update under Locust load without a failed request, a killed replica replaced while the others
answer, and scaling 1 -> 3 -> 1 followed by the gateway without restarting it. After the compose stack
has stopped (test_6), so the replicas have the machine's two cores to themselves. About 4 minutes."""

from __future__ import annotations

from typing import Any

import pytest

from reliability.swarm import SwarmConfig, run
from tests.e2e.build import loadtest_on
from tests.e2e.project import IMAGES, Project, _NAME
from tests.e2e.report import Report

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def swarm_run(project: Project, report: Report) -> dict[str, Any]:
    if not loadtest_on():
        pytest.skip("COMPOSE_TEST_LOADTEST=0: no Locust image for the rolling update")
    report.step("docker swarm: 3 replicas (reliability/swarm.py)")
    # No CPU comparison here (a measurement, not a promise): make swarm-test runs it.
    cfg = SwarmConfig(stack=f"{_NAME}-swarm", image=IMAGES["IMAGE"], gateway_image=IMAGES["GATEWAY_IMAGE"],
                      locust_image=IMAGES["LOCUST_IMAGE"], cpu_repeats=0)
    results = run(cfg)
    report.note(f"swarm run: {results['seconds']} s")
    return results


def test_network_isolation_by_name_and_route(swarm_run: dict[str, Any]) -> None:
    isolation = swarm_run["isolation"]
    assert isolation["from_edge"] == ["torchserve does-not-resolve", "gateway resolves"]
    assert isolation["default_route"] == {"torchserve": False, "gateway": True}


def test_requests_spread_over_every_replica(swarm_run: dict[str, Any], report: Report) -> None:
    spread = swarm_run["spread"]
    report.promise(f"per-replica requests of {spread['requests']}: {sorted(spread['per_replica'].values())}")
    assert spread["status"] == {200: spread["requests"]}
    assert len(spread["per_replica"]) == 3 and min(spread["per_replica"].values()) >= spread["requests"] // 6


def test_rolling_update_under_load_fails_no_request(swarm_run: dict[str, Any], report: Report) -> None:
    update = swarm_run["rolling_update"]
    report.promise(f"rolling update in {update['update_s']} s: {update['locust_requests']} requests, "
                   f"{update['locust_failures']} failed")
    assert update["replaced_all"] and update["locust_requests"] > 100
    assert update["locust_failures"] == 0, f"{update['locust_failures']} failed: {update.get('locust_errors')}"


def test_a_killed_replica_is_replaced_while_the_others_answer(swarm_run: dict[str, Any], report: Report) -> None:
    kill = swarm_run["kill"]
    report.promise(f"killed replica replaced in {kill['replaced_healthy_after_s']} s; {kill['answered_while_replacing']} "
                   f"requests answered meanwhile; failed: {kill['status']} at {kill['failed_seconds_after_kill']} s")
    assert kill["answered_while_replacing"] > 10
    # At most the requests the killed replica had in flight fail (sequential requests: one).
    assert len(kill["failed_seconds_after_kill"]) <= 1 and all(t < 2 for t in kill["failed_seconds_after_kill"])


def test_scaling_is_followed_without_restarting_the_gateway(swarm_run: dict[str, Any], report: Report) -> None:
    scaling = swarm_run["scaling"]
    report.promise(f"1 -> 3 replicas: {sorted(scaling['three']['per_replica'].values())}; back to 1: "
                   f"mean {scaling['one_again']['mean_ms']} ms, max {scaling['one_again']['max_ms']} ms")
    assert scaling["gateway_not_restarted"]
    assert len(scaling["one"]["per_replica"]) == 1
    assert len(scaling["three"]["per_replica"]) == 3 and min(scaling["three"]["per_replica"].values()) > 0
    for phase in ("one", "three", "one_again"):
        assert scaling[phase]["status"] == {200: scaling[phase]["requests"]}, (phase, scaling[phase])
    assert scaling["one_again"]["max_ms"] < 1000  # no request waits on a removed replica's address
