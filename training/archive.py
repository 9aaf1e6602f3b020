"""Package a trained run as model_store/gru_encoder.mar for TorchServe (make archive).

    python -m training.archive --run-dir runs/default                  # version 1.0: model_store/gru_encoder.mar
    python -m training.archive --run-dir runs/other --version 2.0      # model_store/gru_encoder-2.0.mar

Another version of the same model is served beside it (`gru-encoder models add`, docs/DEPLOY.md): its
archive has its own file, and its version in the archive's manifest (the response's `model.version`).

The archive holds the handler, the `gru_encoder` package, encoder.safetensors, config.json and vocab.json:
the model, never how it is served; and the run's metrics.json (held-out BLEU), which `gru-encoder models`
compares before it makes a version the default. Workers, batching, threads and limits come at start-up from the serving
settings (gru_encoder/host/settings.py), so changing them needs no new archive. The artifacts are checked
(hashes, shapes) before anything is written. An archive already in place with the same files, byte for byte
(the manifest's creation time aside), is kept as it is: the image built from it stays the same, so `make up`
with nothing changed recreates no TorchServe replica.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from gru_encoder.core.artifacts import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, load_encoder
from gru_encoder.host.config_cli import config_from_args
from gru_encoder.host.versions import check_version, mar_name

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ArchiveConfig:
    """Build the TorchServe archive (.mar) of a trained run."""

    run_dir: str = field(default="runs/default", metadata={"help": "run folder written by training"})
    export_path: str = field(default="model_store", metadata={"help": "where the .mar is written"})
    model_name: str = "gru_encoder"
    version: str = field(default="1.0", metadata={"help": "the archive's version: 1.0 writes <model-name>.mar, another "
                                                           "<model-name>-<version>.mar (1-32 of A-Z a-z 0-9 . _ -)"})
    handler: str = "handlers/encoder_handler.py"


def build_archive(cfg: ArchiveConfig) -> Path:
    """Write <export_path>/<model_name>.mar (another version: <model_name>-<version>.mar) and return its
    path; prints the archiver command."""
    check_version(cfg.version)
    run = (ROOT / cfg.run_dir).resolve() if not Path(cfg.run_dir).is_absolute() else Path(cfg.run_dir)
    load_encoder(run)  # fail here, not in a crash-looping worker, when the run is incomplete or corrupt
    export = Path(cfg.export_path) if Path(cfg.export_path).is_absolute() else ROOT / cfg.export_path
    export.mkdir(parents=True, exist_ok=True)
    metrics = [str(run / "metrics.json")] if (run / "metrics.json").is_file() else []
    with tempfile.TemporaryDirectory(prefix="gru_encoder_archive_") as tmp:
        # The archiver copies a folder's *contents* to the archive root: stage a folder that contains
        # the package, so the archive root gets gru_encoder/ itself.
        stage = Path(tmp) / "stage"
        shutil.copytree(ROOT / "gru_encoder", stage / "gru_encoder", ignore=shutil.ignore_patterns("__pycache__"))
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        cmd = [
            str(archiver if archiver.exists() else "torch-model-archiver"),
            "--model-name", cfg.model_name,
            "--version", cfg.version,
            "--handler", str(ROOT / cfg.handler),
            "--serialized-file", str(run / WEIGHTS_FILE),
            "--extra-files", ",".join([str(run / CONFIG_FILE), str(run / VOCAB_FILE), *metrics, str(stage)]),
            "--export-path", str(Path(tmp) / "out"),
            "--force",
        ]
        print("+ " + shlex.join(cmd), flush=True)
        (Path(tmp) / "out").mkdir()
        # The archiver scratches in $TMPDIR/<model-name>: keep it private to this build.
        subprocess.run(cmd, check=True, env={**os.environ, "TMPDIR": tmp})
        # Built aside, then renamed into place: the archiver names the file after the model, and a
        # running server's store never holds half an archive.
        mar = export / mar_name(cfg.version, f"{cfg.model_name}.mar")
        built = Path(tmp) / "out" / f"{cfg.model_name}.mar"
        if mar.is_file() and same_files(built, mar):
            print(f"kept {mar}: it holds the same files as this run's archive")
            return mar
        part = export / f".{mar.name}.part"
        shutil.copyfile(built, part)
        os.replace(part, mar)
    print(f"wrote {mar} ({mar.stat().st_size / 1e6:.1f} MB)")
    return mar


MANIFEST = "MAR-INF/MANIFEST.json"


def archive_files(mar: Path) -> dict[str, bytes]:
    """Every file of an archive by name, the manifest without its creation time (the archiver's clock)."""
    with zipfile.ZipFile(mar) as z:
        files = {name: z.read(name) for name in z.namelist()}
    if MANIFEST in files:
        manifest = json.loads(files[MANIFEST])
        manifest.pop("createdOn", None)
        files[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()
    return files


def same_files(a: Path, b: Path) -> bool:
    """Whether two archives hold the same files with the same bytes; an unreadable one holds none."""
    try:
        return archive_files(a) == archive_files(b)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def main(argv: list[str] | None = None) -> None:
    build_archive(config_from_args(ArchiveConfig, argv))


if __name__ == "__main__":
    main()
