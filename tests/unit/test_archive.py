"""The .mar that `make archive` writes: its contents, the handler run from an unzipped copy of it, and an unchanged
archive kept as it is (so that an image built from it stays the same) while a changed one is written anew."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.core.model import pad_batch
from training.archive import MANIFEST, ArchiveConfig, build_archive, same_files

# Run in a fresh interpreter, the way a TorchServe worker does: the unzipped archive is the cwd and
# first on sys.path, so `gru_encoder` must come from the archive, not from this checkout.
WORKER = r"""
import json, sys
sys.path.insert(0, ".")
import gru_encoder
from encoder_handler import GruEncoderHandler

class Context:
    system_properties = {"model_dir": ".", "gpu_id": None, "batch_size": 8}
    manifest = json.load(open("MAR-INF/MANIFEST.json"))
    def __init__(self):
        self.status, self.headers = {}, {}
    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code
    def set_response_content_type(self, idx, value):
        pass
    def set_response_header(self, idx, key, value):
        self.headers[(idx, key)] = value

handler = GruEncoderHandler()
handler.initialize(Context())
ctx = Context()
out = handler.handle([{"body": {"texts": ["i am cold .", "我爱你"]}}, {"body": b"{oops"}], ctx)
print(json.dumps({"package": gru_encoder.__file__, "status": ctx.status, "bodies": [json.loads(b) for b in out]}))
"""


def test_archive_holds_handler_package_artifacts_and_config(smoke_mar: Path) -> None:
    with zipfile.ZipFile(smoke_mar / "gru_encoder.mar") as mar:
        names = set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    assert {"encoder_handler.py", "encoder.safetensors", "config.json", "vocab.json"} <= names
    assert "model-config.yaml" not in names  # serving settings come at deploy time (gru_encoder/host/settings.py)
    assert {"gru_encoder/__init__.py", "gru_encoder/api/service.py", "gru_encoder/api/schema.py"} <= names
    assert not any("__pycache__" in n or n.startswith(("training/", "tests/")) for n in names)
    assert manifest["model"]["modelName"] == "gru_encoder" and manifest["model"]["handler"] == "encoder_handler.py"


def test_handler_runs_from_an_unzipped_copy_of_the_archive(smoke_mar: Path, smoke_run: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(smoke_mar / "gru_encoder.mar") as mar:
        mar.extractall(tmp_path)
    done = subprocess.run([sys.executable, "-c", WORKER], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).resolve().is_relative_to(tmp_path.resolve())
    assert result["status"] == {"0": 200, "1": 400}
    good, bad = result["bodies"]
    assert bad["type"] == "invalid_json"
    loaded = load_encoder(smoke_run)
    ids, lengths = pad_batch([loaded.tokenizer.encode(t).ids for t in ["i am cold .", "我爱你"]])
    with torch.no_grad():
        _, hidden = loaded.encoder(ids, lengths)  # (L*D, 2, H)
    np.testing.assert_allclose(np.asarray(good["hidden"], np.float32), hidden.numpy(), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_the_same_run_archived_again_keeps_the_file(smoke_run: Path, tmp_path: Path) -> None:
    mar = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path)))
    before = (mar.stat().st_mtime_ns, mar.stat().st_ino, mar.read_bytes())
    again = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path)))
    assert again == mar and (mar.stat().st_mtime_ns, mar.stat().st_ino, mar.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gru_encoder.mar"]  # no part file left


@pytest.mark.slow
def test_another_run_replaces_the_archive(smoke_run: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    mar = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(store)))
    before = mar.read_bytes()
    other = tmp_path / "other_run"
    shutil.copytree(smoke_run, other)
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "note": "another evaluation"}))
    build_archive(ArchiveConfig(run_dir=str(other), export_path=str(store)))
    assert mar.read_bytes() != before
    with zipfile.ZipFile(mar) as z:
        assert json.loads(z.read("metrics.json"))["note"] == "another evaluation"


def test_only_the_manifests_creation_time_may_differ(tmp_path: Path) -> None:
    def mar(name: str, created: str, weights: bytes) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(MANIFEST, json.dumps({"createdOn": created, "model": {"modelVersion": "1.0"}}))
            z.writestr("encoder.safetensors", weights)
        return path

    a = mar("a.mar", "07/12/2026 00:00:00", b"w")
    assert same_files(a, mar("b.mar", "08/12/2026 10:11:12", b"w"))
    assert not same_files(a, mar("c.mar", "07/12/2026 00:00:00", b"x"))
    (tmp_path / "broken.mar").write_bytes(b"not a zip")
    assert not same_files(a, tmp_path / "broken.mar")
