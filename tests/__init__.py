"""The test suite: unit/ (in-process, seconds: make check), integration/ (a real TorchServe), e2e/ (the
real docker compose stack). Nothing outside tests/ imports from here."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
