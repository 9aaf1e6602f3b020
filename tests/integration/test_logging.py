"""TorchServe's logs as served (log4j2.xml beside config.properties): no lines per request but the access log."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.slow


def test_served_logs_keep_the_access_log_and_start_up_lines_but_no_per_request_chatter(server) -> None:
    logs = server.workdir / "logs"
    # The handler's own metric lines ([METRICS]gru_encoder_..., sent by each worker every 0.5 s, not per
    # request) are not counted: what is checked is TorchServe's per-request chatter.
    def lines(name: str) -> int:
        return sum(1 for line in (logs / name).read_text().splitlines() if "[METRICS]gru_encoder_" not in line)

    before = {name: lines(name) for name in ("ts_log.log", "access_log.log")}
    n = 30
    with requests.Session() as s:
        for _ in range(n):
            assert s.post(f"{server.url}/predictions/gru_encoder", json={"texts": ["i am cold ."]}, timeout=30).status_code == 200
    time.sleep(1)  # log4j writes on its own threads
    after = {name: lines(name) for name in before}
    assert after["access_log.log"] - before["access_log.log"] == n  # one line per request, as before
    # The frontend's per-request INFO/DEBUG lines (6 a request, each written to ts_log twice: 14 lines a
    # request with the access line) are gone; the worker's own output stays (2 lines a batch: "Backend
    # received inference", the [METRICS] echo), and these requests came one at a time.
    assert after["ts_log.log"] - before["ts_log.log"] <= 2 * n + 5, after["ts_log.log"] - before["ts_log.log"]
    ts_log = (logs / "ts_log.log").read_text()
    assert "Backend response time" not in ts_log and "Model gru_encoder loaded" in ts_log
    assert server.output().count("Torch worker started.") == server.settings.workers  # worker output still on stdout
