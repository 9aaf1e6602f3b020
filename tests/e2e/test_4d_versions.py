"""Model versions on the compose stack: `gru-encoder models --compose` adds a second version from the host,
both TorchServe replicas register it themselves (each launcher's reconciler) and are checked before add
reports success; pinned callers reach it through the gateway, a canary and a promote take effect at the
gateway, a restarted replica comes back with the released default, rollback and retire undo it all.

The stack serves the smoke run as 1.0; 2.0 is the shipped run (runs/default), better on held-out BLEU, so
the promote gate lets it through. The test's keys are limited to 5 requests a second (burst 10): the
requests here are spaced."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gru_encoder.host import versions
from tests import ROOT
from tests.e2e.gateway import ONE_TEXT, PREDICT
from tests.e2e.project import STORE
from tests.e2e.report import Report
from tests.e2e.stack import REPLICAS, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]
SECOND = ROOT / "runs" / "default"


def models(stack: Stack, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`gru-encoder models --compose ...` on the host, as docs/DEPLOY.md runs it."""
    compose = shlex.join(stack.project.compose_command(profiles=False))
    return subprocess.run([sys.executable, "-m", "gru_encoder.host.models_cli", "models", "--compose", compose,
                           "--model-store", str(ROOT / STORE), *argv], cwd=ROOT, env=stack.project.env,
                          capture_output=True, text=True, timeout=timeout)


def answer(stack: Stack, path: str = PREDICT) -> tuple[str, str]:
    """(version, weights sha256) of one answer through the gateway, spaced under the key's rate."""
    time.sleep(0.3)
    r = stack.client().post(ONE_TEXT, path=path)
    assert r.status_code == 200, r.text
    assert r.headers["X-Model-Version"] == r.json()["model"]["version"]
    return r.json()["model"]["version"], r.json()["model"]["weights_sha256"]


def replica_status(stack: Stack, service: str) -> dict:
    import json

    done = stack.project.exec(service, "python3", "-m", "gru_encoder.host.replica_status", timeout=60)
    return json.loads(done.stdout)


def test_a_version_is_added_pinned_canaried_promoted_kept_across_a_restart_and_rolled_back(stack: Stack, report: Report) -> None:
    first = answer(stack)
    second_sha = versions.describe_run(SECOND, "2.0", "x", None).weights_sha256
    t0 = time.monotonic()
    added = models(stack, "add", str(SECOND), "--version", "2.0")
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"version 2.0 is served by {len(REPLICAS)} replicas" in added.stdout
    report.promise(f"gru-encoder models --compose add runs/default --version 2.0: both replicas checked in {time.monotonic() - t0:.0f} s")
    for service in REPLICAS:  # every replica serves both, its default unchanged
        status = replica_status(stack, service)
        assert set(status["versions"]) == {"1.0", "2.0"} and status["default"] == "1.0", (service, status)
    assert {answer(stack, f"{PREDICT}/2.0") for _ in range(4)} == {("2.0", second_sha)}, "pinned: 2.0 from every replica"
    assert answer(stack) == first, "unpinned callers stay on the default"

    assert models(stack, "canary", "2.0", "--percent", "100").returncode == 0  # one key is one caller: all or nothing
    assert answer(stack) == ("2.0", second_sha) and answer(stack, f"{PREDICT}/1.0") == first
    assert models(stack, "canary", "2.0", "--percent", "0").returncode == 0 and answer(stack) == first

    promoted = models(stack, "promote", "2.0")
    assert promoted.returncode == 0, promoted.stderr
    assert answer(stack) == ("2.0", second_sha)
    report.promise("canary 100% and promote 2.0 take effect at the gateway; pinned 1.0 still answers")

    stack.project.compose("restart", REPLICAS[0], timeout=180)
    stack.project.wait_healthy(stack.project.container(REPLICAS[0]), 300)
    status = replica_status(stack, REPLICAS[0])
    assert set(status["versions"]) == {"1.0", "2.0"} and status["default"] == "2.0", status
    assert {answer(stack) for _ in range(4)} == {("2.0", second_sha)}
    report.promise(f"{REPLICAS[0]} restarted after promote: back with versions 1.0 and 2.0, default 2.0")

    assert models(stack, "rollback").returncode == 0 and answer(stack) == first
    retired = models(stack, "retire", "2.0", "--force")
    assert retired.returncode == 0, retired.stderr
    deadline = time.monotonic() + 120
    while any("2.0" in replica_status(stack, s)["versions"] for s in REPLICAS):
        assert time.monotonic() < deadline, "the replicas did not unregister 2.0"
        time.sleep(1)
    time.sleep(0.5)
    r = stack.client().post(ONE_TEXT, path=f"{PREDICT}/2.0")
    assert r.status_code == 404 and "version 2.0 is not served" in r.json()["message"]
    assert not (Path(ROOT / STORE) / "gru_encoder-2.0.mar").exists()
