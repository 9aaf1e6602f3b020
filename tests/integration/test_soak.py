"""The soak pipeline end to end in its --smoke mode (~40 s): saturation, steady load, memory samples, outputs.

The 10-minute soak itself is not run in CI (make soak); this checks that the script measures what it
claims and writes its report, so the long run cannot break unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability.soak import SMOKE, SoakConfig, run

pytestmark = pytest.mark.slow


def test_soak_smoke_samples_memory_and_throughput_and_writes_its_report(smoke_mar: Path, tmp_path: Path) -> None:
    cfg = SoakConfig(**{**SMOKE, "model_store": str(smoke_mar)})
    results = run(cfg, out=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "soak.png"}
    assert json.loads((tmp_path / "results.json").read_text())["requests"] == results["requests"]
    assert results["saturation"]["ok_per_s"] > 0 and results["target_per_s"] > 0
    # Every request of a light steady load succeeds (checked bodies), on the same two workers throughout.
    assert results["requests"] > 0 and results["failed"] == 0, results["failures"]
    assert len(results["worker_pid_sets"]) == 1 and len(results["worker_pid_sets"][0]) >= 1
    samples = results["samples"]
    assert len(samples) >= cfg.duration_s / cfg.sample_s / 2
    assert all(s["workers_total_mb"] > 50 for s in samples), samples  # a torch worker is ~200 MB resident
    assert results["workers_rss_mb"]["growth"] is not None
