"""Training: the smoke pipeline writes every artifact, is reproducible, and splits data honestly."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from gru_encoder.host.config_cli import build_parser, config_from_args
from gru_encoder.core.tokenizer import Tokenizer, TokenizerConfig
from training import data
from training.train import SMOKE, TrainConfig

from tests import ROOT
RUN_FILES = {
    "encoder.safetensors", "config.json", "vocab.json", "train_config.json", "metrics.json", "loss_curve.png",
    "MODEL_CARD.md", "decoder.safetensors", "decoder_config.json", "target_vocab.json",
}


def test_smoke_run_writes_every_artifact(smoke_run: Path) -> None:
    assert RUN_FILES <= {p.name for p in smoke_run.iterdir()}
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in ("train_seconds", "epochs", "valid_loss", "test_bleu", "test_exact_match", "baseline_copy_input_bleu"):
        assert key in metrics
    assert metrics["epochs"] == SMOKE["epochs"] and metrics["train_pairs"] == SMOKE["max_train_pairs"]
    assert 0 <= metrics["test_exact_match"] <= 1 and 0 <= metrics["test_bleu"] <= 100
    # Training happened: validation loss fell from the first epoch to the last.
    assert metrics["valid_loss_per_epoch"][-1] < metrics["valid_loss_per_epoch"][0]
    assert (smoke_run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (smoke_run / "MODEL_CARD.md").read_text()
    assert "Tatoeba" in card and str(metrics["test_bleu"]) in card
    resolved = json.loads((smoke_run / "train_config.json").read_text())
    assert resolved["smoke"] is True and resolved["hidden_size"] == SMOKE["hidden_size"]


def test_cli_run_is_bit_reproducible(smoke_run: Path, tmp_path: Path) -> None:
    """The same config through the command line gives byte-identical weights (seeded, deterministic)."""
    out = tmp_path / "again"
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--smoke", "--out-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "valid loss" in proc.stdout and "->" in proc.stdout  # per-epoch loss and sample translations
    for name in ("encoder.safetensors", "decoder.safetensors", "vocab.json", "target_vocab.json"):
        assert (out / name).read_bytes() == (smoke_run / name).read_bytes(), name
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((smoke_run / "metrics.json").read_text())
    assert (a["valid_loss"], a["test_bleu"]) == (b["valid_loss"], b["test_bleu"])


def test_flags_are_generated_from_the_config() -> None:
    help_text = build_parser(TrainConfig).format_help()
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text
    cfg = config_from_args(TrainConfig, ["--smoke", "--hidden-size", "8", "--bidirectional"], presets={"smoke": SMOKE})
    assert cfg.hidden_size == 8  # an explicit flag beats the preset
    assert cfg.epochs == SMOKE["epochs"] and cfg.bidirectional and cfg.smoke
    assert config_from_args(TrainConfig, []) == TrainConfig()
    with pytest.raises(SystemExit):
        config_from_args(TrainConfig, ["--hidden-size", "big"])


@pytest.fixture(scope="module")
def corpus_pairs() -> list[data.Pair]:
    return data.read_pairs()


def test_corpus_is_the_documented_file(corpus_pairs: list[data.Pair]) -> None:
    assert len(corpus_pairs) == 135_842
    assert corpus_pairs[0] == data.Pair("Go.", "Va !")


def test_split_is_by_english_sentence_and_deterministic(corpus_pairs: list[data.Pair]) -> None:
    tok = Tokenizer.build([], TokenizerConfig())
    corpus = data.build_corpus(corpus_pairs, tok, tok, max_words=10)
    again = data.build_corpus(list(reversed(corpus_pairs)), tok, tok, max_words=10)
    keys = {
        split: {" ".join(tok.tokenize(p.english)) for p in getattr(corpus, split)} for split in data.SPLITS
    }
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["valid"] and not keys["valid"] & keys["test"]
    for split in data.SPLITS:  # same split whatever the order of the file
        assert sorted(map(repr, getattr(corpus, split))) == sorted(map(repr, getattr(again, split)))
    n = len(corpus.train) + len(corpus.valid) + len(corpus.test)
    assert 0.04 < len(corpus.test) / n < 0.06 and 0.04 < len(corpus.valid) / n < 0.06
    # Some English sentences have several French translations; they all stay in one split.
    groups = data.group_references(corpus.test, tok)
    assert len(groups) < len(corpus.test) and all(refs for _, refs in groups)


def test_batches_pad_with_zero_and_frame_targets(corpus_pairs: list[data.Pair]) -> None:
    tok = Tokenizer.build((p.english for p in corpus_pairs[:500]), TokenizerConfig())
    examples = data.encode_pairs(corpus_pairs[:500], tok, tok)
    batches = data.make_batches(examples, 32, seed=7)
    assert sum(b.src_ids.shape[0] for b in batches) == 500
    assert [b.src_ids.tolist() for b in batches] == [b.src_ids.tolist() for b in data.make_batches(examples, 32, seed=7)]
    b = batches[0]
    assert (b.tgt_in[:, 0] == 1).all()  # <sos> first
    for row in range(b.tgt_out.shape[0]):
        n = int((b.tgt_out[row] != 0).sum())
        assert b.tgt_out[row, n - 1] == 2  # <eos> last
        assert b.tgt_in[row, 1:n].tolist() == b.tgt_out[row, : n - 1].tolist()  # shifted by one
        assert b.src_ids[row, b.src_lengths[row] :].eq(0).all()
