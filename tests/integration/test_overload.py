"""Overload against a real TorchServe (reliability/overload.py): beyond the queue, fail fast; then recover.

Its own server (started by overload.run on free ports) with the committed config.properties. 300 callers
with no think time keep ~300 requests outstanding, more than job_queue_size (100) plus the batches in
flight (workers x batch_size = 32 with the default serving settings) can hold, so the overflow does not depend on this machine's speed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reliability.faults import response_timeout_s
from reliability.overload import FAST_503_CLIENT_MS, FAST_503_SERVER_MS, OverloadConfig, queue_size, run

pytestmark = pytest.mark.slow


def test_beyond_the_queue_requests_fail_fast_with_json_503_and_the_service_recovers(smoke_mar: Path, tmp_path: Path) -> None:
    cfg = OverloadConfig(model_store=str(smoke_mar), users=300, kinds="hidden only", overload_s=15.0, drain_s=3.0,
                         quiet_users=4, quiet_s=6.0)
    queue = queue_size(cfg)
    assert cfg.users > queue + 64, "not enough callers to overflow the committed queue"
    results = run(cfg, out=tmp_path)
    loud, quiet = results["overload"], results["quiet"]

    # Every answer was a checked 200 or TorchServe's JSON 503; no reset, no refused connection, no timeout.
    assert loud["ok_200"] > 0 and loud["rejected_503"] > 0, loud
    assert loud["other_failures"] == {} and loud["no_http_answer"] == 0, loud
    assert loud["body_503"]["code"] == 503 and loud["body_503"]["type"] == "ServiceUnavailableException"
    assert re.search(r"gru_encoder", loud["body_503"]["message"])
    # Rejections are fast: immediate inside TorchServe (its access log), and bounded as clients see them
    # (generous: the load generator shares the 2 cores with the server).
    assert results["server_503_ms"]["n"] == loud["rejected_503"], results["server_503_ms"]
    assert results["server_503_ms"]["p99_ms"] < FAST_503_SERVER_MS and loud["latency_503"]["p99_ms"] < FAST_503_CLIENT_MS, loud
    # Admitted requests are bounded by the queue, far below the response timeout.
    assert loud["max_latency_s"] < response_timeout_s(), loud
    # Load gone: the backlog is answered and a quiet phase has no failure at all.
    assert quiet["ok_200"] == quiet["requests"] > 0 and quiet["failures"] == {}, quiet
    assert results["broken"] == []
