"""Schemathesis fuzzes every public route against docs/openapi.json: no 5xx, every response as documented.

Valid and invalid requests are generated from the document (examples, coverage and fuzzing phases)
and sent to the gateway's configuration in front of a real TorchServe (the local gateway of `make
serve`, with an API key, so that schemathesis also checks that a keyed route refuses a call without
one). Two of schemathesis's checks are left out, each for a reason:
- positive_data_acceptance: a schema-valid text can still have no tokens (" ", "\\u200b") or break a
  configurable limit; the JSON schema cannot say what the tokenizer keeps, so those get a 422/413.
- unsupported_method: nginx answers TRACE itself with its 405 before any location, and a HEAD of a GET
  route is a GET without a body; tests/integration/test_local_gateway.py and tests/e2e check the 405s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gru_encoder.api.routes import ROUTES
from loadtests.torchserve_process import TorchServe, wait_until_predicting
from tests import ROOT

pytestmark = pytest.mark.slow
EXCLUDED = "positive_data_acceptance,unsupported_method"
CONFIG = Path(__file__).with_name("schemathesis.toml")  # over-limit requests are 413s (a documented rejection)


def schemathesis(url: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "schemathesis"
    cmd = [str(exe), "--config-file", str(CONFIG), "run", str(ROOT / "docs" / "openapi.json"), "--url", url, "--checks", "all", "--exclude-checks", EXCLUDED,
           "--generation-database", "none", "--request-timeout", "30", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


KEY = "Zx3vQ9-abcdefghijklmnopqrstuvwxyz_0123456789"


@pytest.fixture(scope="module")
def gateway(smoke_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    """The gateway with one API key in front of TorchServe; the key's limits wide enough for the fuzzer."""
    workdir = tmp_path_factory.mktemp("fuzz_gateway")
    (workdir / "api_key").write_text(KEY + "\n")
    ts = TorchServe(smoke_mar, workdir, gateway="local", api_keys=str(workdir / "api_key"))
    ts.env.update({"GATEWAY_RATE": "10000r/s", "GATEWAY_BURST": "10000", "GATEWAY_KEY_INFLIGHT": "64"})
    ts.launch()
    if not wait_until_predicting(ts.proc, f"{ts.url}/health", "gateway", ts.output, 180, method="GET"):
        ts.stop()
        raise TimeoutError(ts.output()[-3000:])
    yield ts
    ts.stop()


def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(gateway) -> None:
    run = schemathesis(gateway.url, "--max-examples", "150", "--seed", "20261123", "-H", f"Authorization: Bearer {KEY}")
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", summary)  # "Test cases: 301 generated, 301 passed"
    assert counts and int(counts[1]) >= 300 and counts[1] == counts[2], summary  # it really sent them, all passed
    assert f"Selected: {len(ROUTES)}/{len(ROUTES)}" in summary and f"Tested: {len(ROUTES)}" in summary, summary  # every public route
    print(summary)


def test_the_fuzzer_fails_on_a_server_that_breaks_the_document(server) -> None:
    """The checks are live: the same run against TorchServe's management API (no such routes) fails."""
    run = schemathesis(server.management_url, "--max-examples", "5", "--seed", "1", "--phases", "examples,coverage")
    assert run.returncode != 0, run.stdout[-3000:]
