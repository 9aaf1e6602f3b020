"""Shared fixtures: one smoke training per test session, reused by every test that needs a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.train import SMOKE, TrainConfig, train


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run folder written by `python -m training.train --smoke` (seconds)."""
    out = tmp_path_factory.mktemp("smoke_run")
    train(TrainConfig(**{**SMOKE, "out_dir": str(out)}))
    return out
