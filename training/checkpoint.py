"""Save and reload the training-only half (decoder + French vocab) beside the encoder artifacts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from gru_encoder.core.artifacts import ArtifactError, load_encoder, load_state_dict, save_state_dict, sha256_file, write_json
from gru_encoder.core.tokenizer import Tokenizer
from training.seq2seq import AttnDecoder, DecoderConfig, Seq2Seq

DECODER_WEIGHTS = "decoder.safetensors"
DECODER_CONFIG = "decoder_config.json"
TARGET_VOCAB = "target_vocab.json"


def save_decoder(run_dir: Path, decoder: AttnDecoder, target: Tokenizer) -> None:
    target.save(run_dir / TARGET_VOCAB)
    write_json(
        run_dir / DECODER_CONFIG,
        {
            "decoder": asdict(decoder.config),
            "files": {
                "weights": {"path": DECODER_WEIGHTS, "sha256": save_state_dict(decoder, run_dir / DECODER_WEIGHTS)},
                "vocab": {"path": TARGET_VOCAB, "sha256": sha256_file(run_dir / TARGET_VOCAB)},
            },
        },
    )


def load_translator(run_dir: str | Path) -> tuple[Seq2Seq, Tokenizer, Tokenizer]:
    """(translator in eval mode, English tokenizer, French tokenizer) of a run folder."""
    run_dir = Path(run_dir)
    loaded = load_encoder(run_dir)
    path = run_dir / DECODER_CONFIG
    if not path.is_file():
        raise ArtifactError(f"{path} not found: this run has no decoder; re-train (make train)")
    meta = json.loads(path.read_text("utf-8"))
    if sha256_file(run_dir / TARGET_VOCAB) != meta["files"]["vocab"]["sha256"]:
        raise ArtifactError(f"sha256 mismatch for {run_dir / TARGET_VOCAB}")
    model = Seq2Seq(loaded.encoder.config, DecoderConfig(**meta["decoder"]))
    model.encoder.load_state_dict(loaded.encoder.state_dict())
    model.decoder.load_state_dict(load_state_dict(run_dir / DECODER_WEIGHTS, meta["files"]["weights"]["sha256"]))
    return model.eval(), loaded.tokenizer, Tokenizer.load(run_dir / TARGET_VOCAB)
