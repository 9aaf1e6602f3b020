"""TorchServe's logs as served (log4j2.xml beside config.properties): no lines per request but the access log."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.slow


def test_served_logs_keep_the_access_log_and_start_up_lines_but_no_per_request_chatter(server) -> None:
    logs = server.workdir / "logs"
    # The workers' metric lines ([METRICS]..., sums sent by each worker every 0.5 s, not per request) are
    # counted apart: what is checked first is TorchServe's per-request chatter.
    def lines(name: str, metrics: bool = False) -> int:
        return sum(1 for line in (logs / name).read_text().splitlines() if ("[METRICS]" in line) == metrics)

    before = {name: lines(name) for name in ("ts_log.log", "access_log.log")}
    metric_lines = lines("ts_log.log", metrics=True)
    n = 60
    with requests.Session() as s:
        for _ in range(n):
            assert s.post(f"{server.url}/predictions/gru_encoder", json={"texts": ["i am cold ."]}, timeout=30).status_code == 200
    time.sleep(1.5)  # log4j writes on its own threads; the workers send their sums every 0.5 s
    after = {name: lines(name) for name in before}
    assert after["access_log.log"] - before["access_log.log"] == n  # one line per request, as before
    # The frontend's per-request INFO/DEBUG lines (6 a request, each written to ts_log twice: 14 lines a
    # request with the access line) are gone, and so is the worker's "Backend received inference" line
    # (one a batch, and these requests came one at a time).
    assert after["ts_log.log"] - before["ts_log.log"] <= 5, after["ts_log.log"] - before["ts_log.log"]
    ts_log = (logs / "ts_log.log").read_text()
    assert "Backend response time" not in ts_log and "Backend received inference" not in ts_log
    assert "Model gru_encoder loaded" in ts_log
    # PredictionTime still reaches TorchServe, with the handler's sums (a few flushes), not a line a batch.
    new_metric_lines = (logs / "ts_log.log").read_text().splitlines()
    new_metric_lines = [line for line in new_metric_lines if "[METRICS]" in line][metric_lines:]
    prediction_times = [line for line in new_metric_lines if "[METRICS]PredictionTime" in line]
    assert 1 <= len(prediction_times) < n / 2, len(prediction_times)
    assert server.output().count("Torch worker started.") == server.settings.workers  # worker output still on stdout
    # Every worker reads TorchServe's protocol through the handler's buffer (gru_encoder/host/torchserve_worker.py).
    assert server.output().count("buffered protocol reads True") == server.settings.workers
