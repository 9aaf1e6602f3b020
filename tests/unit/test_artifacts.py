"""Run artifacts: plain files that reload into an identical encoder, and refuse to load when wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gru_encoder.core.artifacts import ArtifactError, load_encoder, save_encoder, sha256_file
from gru_encoder.core.model import Encoder, EncoderConfig, pad_batch
from gru_encoder.core.tokenizer import Tokenizer
from training.checkpoint import load_translator
from training.evaluate import translate

TEXTS = ["I'm cold.", "He is very tall and she is not.", "zorblax", "我爱你"]


@pytest.fixture
def run_copy(smoke_run: Path, tmp_path: Path) -> Path:
    """A private copy of the smoke run that a test may damage."""
    return Path(shutil.copytree(smoke_run, tmp_path / "run"))


def encode_texts(encoder: Encoder, tokenizer: Tokenizer, texts: list[str]):
    ids, lengths = pad_batch([tokenizer.encode(t).ids for t in texts])
    with torch.no_grad():
        return encoder(ids, lengths)


def test_artifacts_reload_into_an_encoder_with_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(TEXTS)
    encoder = Encoder(EncoderConfig(len(tokenizer), hidden_size=12, num_layers=2, bidirectional=True, dropout=0.1))
    encoder.eval()
    save_encoder(tmp_path, encoder, tokenizer)
    loaded = load_encoder(tmp_path)
    assert loaded.encoder.config == encoder.config and not loaded.encoder.training
    assert loaded.tokenizer.itos == tokenizer.itos and loaded.tokenizer.config == tokenizer.config
    for a, b in zip(encode_texts(encoder, tokenizer, TEXTS), encode_texts(loaded.encoder, loaded.tokenizer, TEXTS)):
        assert torch.equal(a, b)


def test_trained_run_reloads_identically_twice(smoke_run: Path) -> None:
    a, b = load_encoder(smoke_run), load_encoder(smoke_run)
    for x, y in zip(encode_texts(a.encoder, a.tokenizer, TEXTS), encode_texts(b.encoder, b.tokenizer, TEXTS)):
        assert torch.equal(x, y)


def test_config_json_describes_everything_needed(smoke_run: Path) -> None:
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["format"] == "gru_encoder.config/1"
    assert set(config["encoder"]) == {"vocab_size", "hidden_size", "num_layers", "bidirectional", "dropout", "pad_id"}
    assert set(config["tokenizer"]) == {"lowercase", "fold_accents", "max_length"}
    assert config["files"]["weights"]["sha256"] == sha256_file(smoke_run / "encoder.safetensors")
    assert config["files"]["vocab"]["sha256"] == sha256_file(smoke_run / "vocab.json")
    # A plain safetensors state_dict: the encoder's tensors and nothing else.
    state = load_file(smoke_run / "encoder.safetensors")
    assert set(state) == set(Encoder(EncoderConfig(**config["encoder"])).state_dict())


def test_weights_with_wrong_sha256_are_refused(run_copy: Path) -> None:
    state = load_file(run_copy / "encoder.safetensors")
    state["embedding.weight"][5, 0] += 1.0  # one changed float
    save_file(state, run_copy / "encoder.safetensors")
    with pytest.raises(ArtifactError, match="sha256 mismatch for .*encoder.safetensors"):
        load_encoder(run_copy)


def test_truncated_weights_are_refused(run_copy: Path) -> None:
    path = run_copy / "encoder.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_encoder(run_copy)


def test_vocab_from_another_run_is_refused(run_copy: Path) -> None:
    vocab = json.loads((run_copy / "vocab.json").read_text())
    vocab["itos"][4], vocab["itos"][5] = vocab["itos"][5], vocab["itos"][4]
    (run_copy / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ArtifactError, match="sha256 mismatch for .*vocab.json"):
        load_encoder(run_copy)


def _rewrite_config(run: Path, edit) -> None:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


def test_pickled_code_never_runs(run_copy: Path) -> None:
    """A pickle in place of the weights (with a matching hash) is refused without being unpickled."""
    torch.save({"embedding.weight": torch.zeros(2), "payload": Path("/")}, run_copy / "encoder.safetensors")
    digest = sha256_file(run_copy / "encoder.safetensors")
    _rewrite_config(run_copy, lambda c: c["files"]["weights"].update(sha256=digest))
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_encoder(run_copy)


def test_weights_that_do_not_fit_the_config_are_refused(run_copy: Path) -> None:
    _rewrite_config(run_copy, lambda c: c["encoder"].update(hidden_size=c["encoder"]["hidden_size"] * 2))
    with pytest.raises(ArtifactError, match="do not fit the encoder"):
        load_encoder(run_copy)


@pytest.mark.parametrize("missing,match", [("config.json", "make train"), ("encoder.safetensors", "missing"), ("vocab.json", "missing")])
def test_missing_files_say_how_to_fix(run_copy: Path, missing: str, match: str) -> None:
    (run_copy / missing).unlink()
    with pytest.raises(ArtifactError, match=match):
        load_encoder(run_copy)


def test_corrupt_config_is_refused(run_copy: Path) -> None:
    (run_copy / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        load_encoder(run_copy)


def test_decoder_is_saved_and_translates_reproducibly(smoke_run: Path) -> None:
    model, source, target = load_translator(smoke_run)
    again, _, _ = load_translator(smoke_run)
    first = translate(model, source, target, TEXTS, max_len=12)
    assert first == translate(again, source, target, TEXTS, max_len=12)
    assert len(first) == len(TEXTS) and all(isinstance(t, str) for t in first)
    # The translator's encoder is the served encoder, bit for bit.
    served = load_encoder(smoke_run).encoder
    assert all(torch.equal(a, b) for a, b in zip(served.state_dict().values(), model.encoder.state_dict().values()))
