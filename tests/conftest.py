"""Shared fixtures: one smoke training per test session, reused by every test that needs a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.train import SMOKE, TrainConfig, train


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: builds the image and runs the compose stack for real (tests/e2e, minutes)"
    )


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run folder written by `python -m training.train --smoke` (seconds)."""
    out = tmp_path_factory.mktemp("smoke_run")
    train(TrainConfig(**{**SMOKE, "out_dir": str(out)}))
    return out


@pytest.fixture(scope="session")
def smoke_mar(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_store folder holding gru_encoder.mar built from the smoke run by `make archive`'s code."""
    from training.archive import ArchiveConfig, build_archive

    store = tmp_path_factory.mktemp("model_store")
    build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(store)))
    return store


@pytest.fixture(scope="session")
def server(smoke_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real TorchServe serving the smoke archive on free 127.0.0.1 ports."""
    from loadtests.torchserve_process import TorchServe

    ts = TorchServe(smoke_mar, tmp_path_factory.mktemp("torchserve"))
    ts.start()
    yield ts
    ts.stop()
