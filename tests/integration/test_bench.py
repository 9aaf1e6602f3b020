"""The benchmark pipeline end to end in seconds (--smoke): limit, TorchServe, LitServe peer, npz, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.bench import SMOKE, BenchConfig, bench

pytestmark = pytest.mark.slow


def test_bench_smoke_measures_every_server_and_writes_its_report(server, smoke_run: Path, tmp_path: Path) -> None:
    cfg = BenchConfig(**{**SMOKE, "torchserve_url": server.url, "run_dir": str(smoke_run), "out_dir": str(tmp_path)})
    results = bench(cfg)
    out = Path(results["out"])
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "chart.png"}
    assert json.loads((out / "results.json").read_text())["limit"]["texts_per_s"] > 0
    for name in ("torchserve", "litserve"):
        cell = results["servers"][name]["2"]
        # Every response was checked by the locustfile (status, shapes, lengths): none failed.
        assert cell["requests"] > 0 and cell["failures"] == 0 and cell["texts_per_s"] > 0, (name, cell)
    fmts = results["formats"]
    assert fmts["json"]["failures"] == fmts["npz"]["failures"] == 0
    assert fmts["npz"]["mean_response_bytes"] < fmts["json"]["mean_response_bytes"]
    assert "| torchserve | 2 |" in (out / "results.md").read_text()
