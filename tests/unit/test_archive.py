"""training.archive: an unchanged archive is kept as it is (so an image built from it stays the same), a changed
one is written anew."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from training.archive import MANIFEST, ArchiveConfig, build_archive, same_files

pytestmark = pytest.mark.slow


def test_the_same_run_archived_again_keeps_the_file(smoke_run: Path, tmp_path: Path) -> None:
    mar = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path)))
    before = (mar.stat().st_mtime_ns, mar.stat().st_ino, mar.read_bytes())
    again = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path)))
    assert again == mar and (mar.stat().st_mtime_ns, mar.stat().st_ino, mar.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gru_encoder.mar"]  # no part file left


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
