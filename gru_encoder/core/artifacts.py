"""Plain run artifacts: encoder weights (safetensors) + config.json + vocab.json, checked on load.

config.json holds everything needed to rebuild the encoder and its tokenizer and the sha256 of the
weights and vocab files; loading refuses files whose hash does not match. Weights are safetensors:
a JSON header and raw tensor bytes, nothing that can run code when read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gru_encoder.core.model import Encoder, EncoderConfig
from gru_encoder.core.tokenizer import Tokenizer, TokenizerConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.safetensors"
VOCAB_FILE = "vocab.json"
CONFIG_FORMAT = "gru_encoder.config/1"
MODEL_NAME = "gru_encoder"


# How to fix a bad run folder or archive; every ArtifactError about the run's files ends with it.
REBUILD = "copy the whole run folder again (a .mar: rebuild it from a good run with make archive) or re-train (make train)"


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
    """Save a CPU, contiguous state_dict as safetensors and return its sha256 (same tensors, same bytes)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    return sha256_file(path)


def load_state_dict(path: Path, expected_sha256: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a safetensors state_dict after checking its sha256.

    Every refusal is one line (TorchServe logs a worker's exception line by line) that says what is
    wrong and what to do: inside a served .mar, `path` is TorchServe's unpacked copy, so the fix is
    always to rebuild the archive from a good run folder."""
    if not path.is_file():
        raise ArtifactError(f"weights file {path} is missing; {REBUILD}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(
            f"sha256 mismatch for {path}: config.json expects {expected_sha256}, file has {actual}. "
            f"The weights are corrupt or from another run; {REBUILD}"
        )
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # a pickle, a truncated file, a bad header
        raise ArtifactError(f"{path} is not a readable safetensors file ({type(e).__name__}: {_first_line(e)}); {REBUILD}") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ArtifactError(f"{path} is not a plain state_dict of tensors (got {type(state).__name__}); {REBUILD}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a diverged training run saves such weights with a perfectly good hash
        raise ArtifactError(f"{path} has NaN or infinite values in {', '.join(bad[:5])}; the run diverged: re-train (make train)")
    return state


def check_state_fits(state: dict[str, torch.Tensor], module: torch.nn.Module, config_path: Path) -> None:
    """Refuse a state_dict whose names or shapes differ from `module`'s, naming the first differences on
    one line (torch's own message spans many lines and says nothing about how to fix it)."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"{k}: file {list(got[k])}, config {list(want[k])}" for k in want if k in got and got[k] != want[k]]
    problems += [f"{k}: missing" for k in want if k not in got] + [f"{k}: unexpected" for k in got if k not in want]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ArtifactError(
            f"weights do not fit the encoder described in {config_path} ({_describe(module)}): "
            f"{'; '.join(problems[:3])}{more}. The weights and config.json come from different runs; {REBUILD}"
        )


def _describe(module: torch.nn.Module) -> str:
    cfg = getattr(module, "config", None)
    return ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()) if cfg is not None else type(module).__name__


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def save_encoder(run_dir: str | Path, encoder: Encoder, tokenizer: Tokenizer, **extra: Any) -> dict:
    """Write encoder.safetensors, vocab.json and config.json into run_dir; returns the config written."""
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
        raise ArtifactError(f"vocab file {vocab_path} is missing; {REBUILD}")
    if sha256_file(vocab_path) != files["vocab"]["sha256"]:
        raise ArtifactError(f"sha256 mismatch for {vocab_path}: it does not belong to {config_path}; {REBUILD}")
    tokenizer = Tokenizer.load(vocab_path)
    if tokenizer.config != tokenizer_config or len(tokenizer) != encoder_config.vocab_size:
        raise ArtifactError(f"{vocab_path} does not match the tokenizer/encoder settings in {config_path}; {REBUILD}")

    state = load_state_dict(run_dir / files["weights"]["path"], files["weights"]["sha256"], map_location)
    encoder = Encoder(encoder_config)
    check_state_fits(state, encoder, config_path)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:  # check_state_fits caught names and shapes; anything else lands here
        raise ArtifactError(f"weights do not fit the encoder described in {config_path}: {_first_line(e)}; {REBUILD}") from e
    encoder.to(map_location).eval()
    return LoadedEncoder(encoder=encoder, tokenizer=tokenizer, config=config)
