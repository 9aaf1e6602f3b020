"""Inputs that an error once echoed in full, against a real TorchServe: a small 4xx at once, nothing lost.

A 1.1 MB body whose one unknown field name is 280,000 emoji got a 6.7 MB error, over TorchServe's
max_response_size: the frontend threw TooLongFrameException, dropped the worker, and every request
batched with it got 500 "Worker died.". Now each such body gets a 4xx under contract.MAX_ERROR_BYTES,
while another caller's requests all succeed and no worker restarts.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest
import requests

from gru_encoder.api.contract import MAX_ERROR_BYTES, ROUTE_HEADER, ErrorBody

pytestmark = pytest.mark.slow
GOOD = {"texts": ["i am cold ."], "return": ["hidden"]}
EMOJI_FIELD = orjson.dumps({"texts": ["a"], "\U0001F600" * 280_000: 1})  # 1.1 MB
HUGE_MODEL = orjson.dumps({"input": "i am cold .", "model": "m" * 1_000_000})
EMOJI_FIELD_OPENAI = orjson.dumps({"input": "a", "model": "gru_encoder", "\U0001F600" * 280_000: 1})
EMBEDDINGS = {ROUTE_HEADER: "embeddings"}
# What TorchServe's frontend logs when it loses a worker (ts_log.log) or the launcher's output shows.
WORKER_LOST = ("Worker died", "worker process died", "Worker disconnected", "Retry worker", "TooLongFrameException")


def worker_events(server) -> tuple[int, int]:
    """(lines about a lost worker, workers started) in TorchServe's log and output so far."""
    text = (server.workdir / "logs" / "ts_log.log").read_text(errors="replace") + server.output()
    return sum(text.count(phrase) for phrase in WORKER_LOST), server.output().count("Torch worker started.")


def test_echoing_bodies_get_a_small_4xx_fast_and_cost_no_one_anything(server) -> None:
    url = f"{server.url}/predictions/gru_encoder"
    before = worker_events(server)
    done, good = threading.Event(), []

    def caller() -> None:  # another client, whose requests share server batches with the bad ones
        with requests.Session() as s:
            while not done.is_set():
                good.append(s.post(url, json=GOOD, timeout=30).status_code)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            for body, headers, dialect in ((EMOJI_FIELD, {}, "native"), (HUGE_MODEL, EMBEDDINGS, "openai"),
                                           (EMOJI_FIELD_OPENAI, EMBEDDINGS, "openai")):
                start = time.perf_counter()
                r = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=30)
                elapsed = time.perf_counter() - start
                assert r.status_code == 422, (r.status_code, r.content[:300])
                assert r.headers["Content-Type"].startswith("application/json")
                assert len(r.content) < MAX_ERROR_BYTES and elapsed < 2.0, (dialect, len(r.content), elapsed)
                error = ErrorBody.parse(r.content) if dialect == "native" else r.json()["error"]
                assert error is not None and "characters)" in (error.message if dialect == "native" else error["message"]), r.text
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
    assert good and set(good) == {200}, {code: good.count(code) for code in set(good)}
    time.sleep(1.0)  # log4j writes on its own threads
    assert worker_events(server) == before, "a worker was lost or restarted"
