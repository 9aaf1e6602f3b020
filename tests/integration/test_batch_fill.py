"""The batch-fill agent (java/BatchFillAgent.java) on a real TorchServe. With batch_fill=queued a lone
request does not wait for the batch delay and a queue still goes in batches; with batch_fill=wait,
TorchServe's own delay holds every lone request. A long delay (DELAY_MS) makes the two unmistakable."""

from __future__ import annotations

import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from loadtests.torchserve_process import TorchServe
from gru_encoder.api.contract import ROUTE_HEADER
from gru_encoder.host.settings import ServingSettings
from tests import ROOT
from tests.integration.test_ecosystem import count, metric_values

pytestmark = pytest.mark.slow

DELAY_MS = 600
AGENT = ROOT / ServingSettings().batch_fill_agent
AGENT_CLASS = "gruencoder.torchserve.BatchFillAgent"
LOG_LINE = "gru-encoder batch fill: queued"


def model_server_jar() -> Path:
    import ts

    return Path(ts.__file__).parent / "frontend" / "model-server.jar"


def lone_request_seconds(url: str, n: int) -> list[float]:
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        r = requests.post(f"{url}/predictions/gru_encoder", json={"texts": ["i am cold ."]}, timeout=30)
        seconds.append(time.perf_counter() - start)
        assert r.status_code == 200, r.text
    return seconds


def test_the_agent_patches_the_installed_torchserve() -> None:
    classpath = f"{AGENT}:{model_server_jar()}"
    patched = subprocess.run(["java", f"-javaagent:{AGENT}", "-cp", classpath, AGENT_CLASS], capture_output=True, text=True, timeout=60)
    assert patched.returncode == 0 and "gru-encoder batch fill: applied" in patched.stdout, patched.stdout + patched.stderr
    assert LOG_LINE in patched.stderr
    plain = subprocess.run(["java", "-cp", classpath, AGENT_CLASS], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and "not applied" in plain.stdout


def test_the_agent_stops_a_torchserve_whose_batching_it_does_not_know(tmp_path: Path) -> None:
    """Another Model.pollBatch (one timed poll, not 0.12's three): the JVM stops and says why, rather
    than batch otherwise than the settings say."""
    source = tmp_path / "org" / "pytorch" / "serve" / "wlm" / "Model.java"
    source.parent.mkdir(parents=True)
    source.write_text("package org.pytorch.serve.wlm;\nimport java.util.concurrent.*;\npublic class Model {\n"
                      "  public Object pollBatch(LinkedBlockingDeque<Object> q) throws InterruptedException {\n"
                      "    return q.poll(1, TimeUnit.MILLISECONDS);\n  }\n}\n")
    subprocess.run(["javac", "-d", str(tmp_path / "classes"), str(source)], check=True, timeout=120)
    other = subprocess.run(["java", f"-javaagent:{AGENT}", "-cp", f"{AGENT}:{tmp_path / 'classes'}", AGENT_CLASS],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 78, other.stdout + other.stderr
    assert "Model.pollBatch has 1 timed polls, TorchServe 0.12's has 3" in other.stderr
    assert "install torchserve==0.12.0, or serve with batch_fill=wait" in other.stderr


def test_queued_fill_sends_a_lone_request_at_once_and_still_batches_a_queue(smoke_mar: Path, tmp_path: Path) -> None:
    ts = TorchServe(smoke_mar, tmp_path, workers=1, batch_size=8, batch_fill="queued", max_batch_delay_ms=DELAY_MS, torch_threads=1).start()
    try:
        assert LOG_LINE in ts.output()
        info = requests.get(f"{ts.url}/predictions/gru_encoder", headers={ROUTE_HEADER: "info"}, timeout=10)
        seconds = lone_request_seconds(ts.url, 7)
        # TorchServe alone holds each of these for DELAY_MS (the test below); the agent sends them at once.
        assert statistics.median(seconds) < DELAY_MS / 1e3 / 3, seconds
        # 96 requests from 32 callers at one worker: those that queue while it computes go together, at
        # most batch_size at a time, and every answer is right.
        metrics_url = f"http://127.0.0.1:{ts.settings.metrics_port}/metrics"
        time.sleep(1.5)  # the worker sends its sums every 0.5 s: the lone requests are counted before `before`
        before = {name: count(metric_values(metrics_url, name)) for name in ("gru_encoder_batches_total", "gru_encoder_batch_requests_total")}
        texts = [f"i am cold {i} ." for i in range(96)]
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda t: requests.post(f"{ts.url}/predictions/gru_encoder", json={"texts": [t], "return": ["hidden"]},
                                                            timeout=30), texts))
        assert [a.status_code for a in answers] == [200] * len(texts)
        deadline = time.monotonic() + 10
        while True:
            after = {name: count(metric_values(metrics_url, name)) for name in before}
            served = after["gru_encoder_batch_requests_total"] - before["gru_encoder_batch_requests_total"]
            if served >= len(texts) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # The two counters came from two scrapes, and the frontend may have taken the worker's flush between
        # them: both read again once it has surely taken every flush (the worker sends its sums every 0.5 s).
        time.sleep(1.0)
        after = {name: count(metric_values(metrics_url, name)) for name in before}
        served = after["gru_encoder_batch_requests_total"] - before["gru_encoder_batch_requests_total"]
        batches = after["gru_encoder_batches_total"] - before["gru_encoder_batches_total"]
        assert served == len(texts)
        assert len(texts) / 8 <= batches < len(texts) * 0.8, batches  # batched, never past batch_size
    finally:
        ts.stop()
    assert info.status_code == 200 and info.json()["batching"]["batch_fill"] == "queued"


def test_wait_fill_is_torchserves_own_batch_delay(smoke_mar: Path, tmp_path: Path) -> None:
    ts = TorchServe(smoke_mar, tmp_path, workers=1, batch_size=8, batch_fill="wait", max_batch_delay_ms=DELAY_MS, torch_threads=1).start()
    try:
        seconds = lone_request_seconds(ts.url, 3)
        assert "gru-encoder batch fill" not in ts.output()
    finally:
        ts.stop()
    assert min(seconds) >= DELAY_MS / 1e3 * 0.95, seconds
