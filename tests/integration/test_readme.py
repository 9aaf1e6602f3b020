"""The README's first example, run for real: `make serve`'s archive of the shipped model behind its local
gateway, the README's curl body, and the exact answer the README shows (its bytes, by sha256)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import requests
import torch

from gru_encoder.api.service import EncoderService
from gru_encoder.core.artifacts import load_encoder
from loadtests.torchserve_process import TorchServe
from tests import ROOT
from training.archive import ArchiveConfig, build_archive

pytestmark = pytest.mark.slow
README = (ROOT / "README.md").read_text()


def readme_example() -> tuple[dict, str, str]:
    """(request body of the first curl, the shown body's prefix up to the first float, the stated sha256)."""
    curl = re.search(r"curl -s http://127\.0\.0\.1:8080/predictions/gru_encoder -H 'Content-Type: application/json' \\\n\s+-d '(\{.*?\})'", README)
    shown = re.search(r"```json\n(\{\"model\".*?\"hidden\":\[\[\[)", README)
    sha = re.search(r"sha256 <code>([0-9a-f]{64})</code>", README)
    assert curl and shown and sha, "the README's first example moved: keep curl, the shown body and its sha256 together"
    return json.loads(curl.group(1)), shown.group(1), sha.group(1)


def test_readme_example_is_exactly_what_the_shipped_model_serves(tmp_path: Path) -> None:
    body, prefix, sha = readme_example()
    store = tmp_path / "store"
    build_archive(ArchiveConfig(run_dir=str(ROOT / "runs" / "default"), export_path=str(store)))
    # One torch thread per worker: the README's condition for the exact bytes (2 workers on 2 CPUs).
    ts = TorchServe(store, tmp_path / "ts", torch_threads=1, gateway="local").start()  # as make serve runs it
    try:
        r = requests.post(f"{ts.url}/predictions/gru_encoder", json=body, timeout=30)
    finally:
        ts.stop()
    assert r.status_code == 200, r.text
    # On any CPU: the served bytes are the in-process encoder's, one thread, same code.
    torch.set_num_threads(1)
    [(status, alone)] = EncoderService(load_encoder(ROOT / "runs" / "default")).handle([json.dumps(body).encode()])
    assert status == 200 and alone == r.content
    # On a CPU like the one the README was written on: the bytes it shows.
    assert r.text.startswith(prefix)
    assert hashlib.sha256(r.content).hexdigest() == sha, r.text[:400]
    # The whole body shown in the README is the same bytes.
    full = re.search(r"<summary>The whole body.*?```json\n(.*?)\n```", README, re.S).group(1)
    assert full.encode() == r.content
