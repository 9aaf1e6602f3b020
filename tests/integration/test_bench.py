"""The benchmark pipeline end to end (--smoke): limit, TorchServe, both peers, wrk, CPU from /proc, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.bench import SMOKE, BenchConfig, bench, summarize
from loadtests.bench_report import targets

pytestmark = pytest.mark.slow


def test_bench_smoke_measures_every_server_and_writes_its_report(server, smoke_run: Path, tmp_path: Path) -> None:
    cfg = BenchConfig(**{**SMOKE, "torchserve_url": server.url, "run_dir": str(smoke_run), "out_dir": str(tmp_path)})
    results = bench(cfg)
    out = Path(results["out"])
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "chart.png"}
    written = json.loads((out / "results.json").read_text())
    limit = written["limit"]
    assert limit["texts_per_s"] > 0 and 0 < limit["cpu_ms_per_text"] < 100
    one = written["limit_one_text"]
    # A text alone pays the whole forward pass and the request's fixed costs; in a batch it shares them.
    assert one["batched"]["cpu_ms_per_text"] < one["solo"]["cpu_ms_per_text"]
    for name in ("torchserve", "litserve", "rayserve"):
        cell = results["servers"][name]["2"]
        # Every response was checked by the locustfile (status, shapes, lengths): none failed.
        assert cell["requests"] > 0 and cell["failures"] == 0 and cell["texts_per_s"] > 0, (name, cell)
        # The server's processes did the work: its CPU per text is real, and above what the model alone costs.
        assert cell["server_cpu_ms_per_text"] > limit["cpu_ms_per_text"] * 0.5, (name, cell)
        assert cell["server_worker_cores"] > 0 and cell["loadgen_cores"] > 0, (name, cell)
        solo = results["wrk"][name]["1"]
        assert solo["requests"] > 0 and solo["failures"] == 0 and solo["p50_ms"] > 0, (name, solo)
        assert solo["server_cpu_ms_per_text"] > 0 and solo["loadgen_cores"] < 0.5, (name, solo)
    assert results["servers"]["torchserve"]["2"]["server_frontend_cores"] > 0  # Java's share is found
    fmts = results["formats"]
    assert fmts["json"]["failures"] == fmts["npz"]["failures"] == 0
    assert fmts["npz"]["mean_response_bytes"] < fmts["json"]["mean_response_bytes"]
    md = (out / "results.md").read_text()
    assert "| torchserve | 2 |" in md and "| rayserve | 1 |" in md and "one text at one user" in md


def test_summary_gives_median_and_range_of_the_repeats_and_targets_compare_them() -> None:
    runs = [{"requests": 10, "failures": 0, "texts_per_s": v, "p99_ms": p, "one_text_p50_ms": None} for v, p in ((90, 30), (100, 20), (130, 10))]
    cell = summarize(runs)
    assert cell["texts_per_s"] == 100 and cell["range"]["texts_per_s"] == (90, 130) and cell["p99_ms"] == 20
    assert cell["requests"] == 30 and cell["repeats"] == 3 and cell["one_text_p50_ms"] is None
    peer = summarize([{**r, "texts_per_s": r["texts_per_s"] - 1, "p99_ms": 19} for r in runs])
    results = {"servers": {"torchserve": {"8": cell}, "litserve": {"8": peer}}, "limit": {"cpu_ms_per_text": 0.2}}
    [(name, seen, met)] = targets(results)
    assert "litserve at 8 users" in name and seen.startswith("1.01x") and met is False  # faster, but p99 20 > 19 ms
