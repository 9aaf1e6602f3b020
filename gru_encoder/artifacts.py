"""Plain run artifacts: encoder state_dict + config.json + vocab.json, checked on load.

config.json holds everything needed to rebuild the encoder and its tokenizer and the sha256 of the
weights and vocab files; loading refuses files whose hash does not match, and loads the weights
with `weights_only=True` (no pickled code ever runs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gru_encoder.model import Encoder, EncoderConfig
from gru_encoder.tokenizer import Tokenizer, TokenizerConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.pt"
VOCAB_FILE = "vocab.json"
CONFIG_FORMAT = "gru_encoder.config/1"
MODEL_NAME = "gru_encoder"


class ArtifactError(RuntimeError):
    """A run folder is missing, incomplete, corrupt or inconsistent; the message says how to fix it."""


@dataclass
class LoadedEncoder:
    encoder: Encoder  # in eval mode
    tokenizer: Tokenizer
    config: dict[str, Any]  # the parsed config.json


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_state_dict(module: torch.nn.Module, path: Path) -> str:
    """Save a CPU, contiguous state_dict (plain tensors only) and return its sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, path)
    return sha256_file(path)


def load_state_dict(path: Path, expected_sha256: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a state_dict with weights_only=True after checking its sha256."""
    if not path.is_file():
        raise ArtifactError(f"weights file {path} is missing; re-run training (make train)")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(
            f"sha256 mismatch for {path}: config.json expects {expected_sha256}, file has {actual}. "
            "The weights are corrupt or from another run; copy the whole run folder again or re-train"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for objects, RuntimeError for a broken zip
        raise ArtifactError(f"{path} is not a plain state_dict of tensors ({type(e).__name__}: {e})") from e


def save_encoder(run_dir: str | Path, encoder: Encoder, tokenizer: Tokenizer, **extra: Any) -> dict:
    """Write encoder.pt, vocab.json and config.json into run_dir; returns the config written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if encoder.config.vocab_size != len(tokenizer):
        raise ValueError(f"encoder vocab_size={encoder.config.vocab_size} != tokenizer size {len(tokenizer)}")
    tokenizer.save(run_dir / VOCAB_FILE)
    config = {
        "format": CONFIG_FORMAT,
        "model_name": MODEL_NAME,
        "encoder": asdict(encoder.config),
        "tokenizer": asdict(tokenizer.config),
        "files": {
            "weights": {"path": WEIGHTS_FILE, "sha256": save_state_dict(encoder, run_dir / WEIGHTS_FILE)},
            "vocab": {"path": VOCAB_FILE, "sha256": sha256_file(run_dir / VOCAB_FILE)},
        },
        "torch_version": torch.__version__,
        **extra,
    }
    write_json(run_dir / CONFIG_FILE, config)
    return config


def load_encoder(run_dir: str | Path, map_location: str | torch.device = "cpu") -> LoadedEncoder:
    """Rebuild the encoder and tokenizer of a run folder, refusing anything that does not check out."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ArtifactError(f"{config_path} not found: train a model first (make train) or point to a run folder")
    try:
        config = json.loads(config_path.read_text("utf-8"))
        if config.get("format") != CONFIG_FORMAT:
            raise ArtifactError(f"{config_path}: format {config.get('format')!r} is not {CONFIG_FORMAT!r}")
        files = config["files"]
        encoder_config = EncoderConfig(**config["encoder"])
        tokenizer_config = TokenizerConfig(**config["tokenizer"])
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{config_path} is corrupt or from an incompatible version ({e}); re-train") from e

    vocab_path = run_dir / files["vocab"]["path"]
    if not vocab_path.is_file():
        raise ArtifactError(f"vocab file {vocab_path} is missing; copy the whole run folder or re-train")
    if sha256_file(vocab_path) != files["vocab"]["sha256"]:
        raise ArtifactError(f"sha256 mismatch for {vocab_path}: it does not belong to {config_path}")
    tokenizer = Tokenizer.load(vocab_path)
    if tokenizer.config != tokenizer_config or len(tokenizer) != encoder_config.vocab_size:
        raise ArtifactError(f"{vocab_path} does not match the tokenizer/encoder settings in {config_path}")

    state = load_state_dict(run_dir / files["weights"]["path"], files["weights"]["sha256"], map_location)
    encoder = Encoder(encoder_config)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"weights do not fit the encoder described in {config_path}: {e}") from e
    encoder.to(map_location).eval()
    return LoadedEncoder(encoder=encoder, tokenizer=tokenizer, config=config)
