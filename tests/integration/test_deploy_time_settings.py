"""Serving settings change at start-up, not in the archive: the same .mar served with other workers,
batching and limits (what GRU_ENCODER_* does in a container), on a real TorchServe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from loadtests.torchserve_process import TorchServe

pytestmark = pytest.mark.slow


def test_the_same_archive_serves_with_other_workers_batching_and_limits(smoke_mar: Path, tmp_path: Path) -> None:
    mar = smoke_mar / "gru_encoder.mar"
    before = hashlib.sha256(mar.read_bytes()).hexdigest()
    ts = TorchServe(smoke_mar, tmp_path, workers=1, batch_size=4, max_batch_delay_ms=7, max_texts=2, torch_threads=1).start()
    try:
        described = requests.get(f"{ts.management_url}/models/gru_encoder", timeout=10).json()[0]
        assert (described["minWorkers"], described["maxWorkers"], described["batchSize"], described["maxBatchDelay"]) == (1, 1, 4, 7)
        assert len(described["workers"]) == 1
        # The handler has the same settings as TorchServe: the limit is 2 texts, named in the 413.
        r = requests.post(f"{ts.url}/predictions/gru_encoder", json={"texts": ["a", "b", "c"]}, timeout=30)
        assert r.status_code == 413 and r.json()["type"] == "too_many_texts" and "limit of 2" in r.json()["message"], r.text
        assert requests.post(f"{ts.url}/predictions/gru_encoder", json={"texts": ["a", "b"]}, timeout=30).status_code == 200
        assert "(threads 1), limits max_texts=2 " in ts.output() or "(threads 1), limits max_texts=2 " in (tmp_path / "logs" / "model_log.log").read_text()
    finally:
        ts.stop()
    assert hashlib.sha256(mar.read_bytes()).hexdigest() == before  # no new archive was needed
