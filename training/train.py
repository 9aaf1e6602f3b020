"""Train the Embedding+GRU encoder as the encoder half of an English->French GRU translator.

    python -m training.train              # the default run (make train), writes runs/default/
    python -m training.train --smoke      # the whole pipeline in seconds (used by the tests)
    python -m training.train --help       # every flag, generated from TrainConfig
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from gru_encoder.core.artifacts import save_encoder, write_json
from gru_encoder.host.config_cli import config_from_args
from gru_encoder.core.model import EncoderConfig
from gru_encoder.core.tokenizer import Tokenizer, TokenizerConfig
from training import data
from training.checkpoint import save_decoder
from training.evaluate import mean_loss, score, translate
from training.loop import make_optimizer, optimization_step
from training.report import plot_losses, write_model_card
from training.seq2seq import DecoderConfig, Seq2Seq


@dataclass(frozen=True)
class TrainConfig:
    """Train the GRU encoder (as half of an English->French translator) and write its artifacts."""

    out_dir: str = field(default="runs/default", metadata={"help": "run folder for every artifact"})
    seed: int = 1234
    # data
    max_words: int = field(default=10, metadata={"help": "keep pairs with at most this many tokens a side"})
    valid_permille: int = 50
    test_permille: int = 50
    max_train_pairs: int = field(default=0, metadata={"help": "0 = all; else a seeded subsample"})
    max_eval_sentences: int = field(default=0, metadata={"help": "0 = all held-out sentences"})
    src_min_freq: int = field(default=2, metadata={"help": "rarer English words map to <unk>"})
    tgt_min_freq: int = 2
    tokenizer_max_length: int = field(default=128, metadata={"help": "serving limit, tokens incl. <eos>"})
    # encoder (the served model)
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = field(default=0.0, metadata={"help": "between encoder GRU layers"})
    # decoder and optimization
    decoder_dropout: float = 0.1
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = field(default=0.05, metadata={"help": "cosine decay ends at lr * this"})
    clip_grad: float = 1.0
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = torch's default"})
    samples: int = field(default=3, metadata={"help": "held-out translations printed each epoch"})
    smoke: bool = field(default=False, metadata={"help": "tiny data and model: the pipeline in seconds"})


SMOKE = dict(
    smoke=True,
    out_dir="runs/smoke", max_train_pairs=2000, max_eval_sentences=100, hidden_size=32, epochs=2, batch_size=64
)


def log(msg: str) -> None:
    tqdm.write(msg, file=sys.stdout)


def train(cfg: TrainConfig) -> dict:
    """Run training end to end; returns the metrics written to metrics.json."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "train_config.json", asdict(cfg))

    # English is the served side: accents folded. French keeps its accents, so output is real French.
    src_tok_cfg = TokenizerConfig(fold_accents=True, max_length=cfg.tokenizer_max_length)
    tgt_tok_cfg = TokenizerConfig(fold_accents=False, max_length=cfg.tokenizer_max_length)
    probe_src, probe_tgt = Tokenizer.build([], src_tok_cfg), Tokenizer.build([], tgt_tok_cfg)
    corpus = data.build_corpus(
        data.read_pairs(), probe_src, probe_tgt, max_words=cfg.max_words,
        valid_permille=cfg.valid_permille, test_permille=cfg.test_permille,
    )
    train_pairs = corpus.train
    if cfg.max_train_pairs:
        gen = torch.Generator().manual_seed(cfg.seed)
        keep = torch.randperm(len(train_pairs), generator=gen)[: cfg.max_train_pairs].sort().values
        train_pairs = [train_pairs[i] for i in keep.tolist()]
    # Vocabs come from the training split only: held-out words are unknown, as in serving.
    source = Tokenizer.build((p.english for p in train_pairs), src_tok_cfg, min_freq=cfg.src_min_freq)
    target = Tokenizer.build((p.french for p in train_pairs), tgt_tok_cfg, min_freq=cfg.tgt_min_freq)
    log(f"pairs: train {len(train_pairs)}, valid {len(corpus.valid)}, test {len(corpus.test)}; "
        f"vocab: English {len(source)}, French {len(target)}")

    train_examples = data.encode_pairs(train_pairs, source, target)
    valid_batches = data.make_batches(data.encode_pairs(corpus.valid, source, target), 256, seed=None)
    valid_groups = data.group_references(corpus.valid, probe_src)
    test_groups = data.group_references(corpus.test, probe_src)
    if cfg.max_eval_sentences:
        valid_groups, test_groups = valid_groups[: cfg.max_eval_sentences], test_groups[: cfg.max_eval_sentences]
    samples = valid_groups[:: max(1, len(valid_groups) // max(cfg.samples, 1))][: cfg.samples]

    encoder_cfg = EncoderConfig(
        vocab_size=len(source), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
        bidirectional=cfg.bidirectional, dropout=cfg.dropout,
    )
    decoder_cfg = DecoderConfig(
        vocab_size=len(target), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
        encoder_dim=encoder_cfg.num_directions * cfg.hidden_size,
        encoder_directions=encoder_cfg.num_directions, dropout=cfg.decoder_dropout,
    )
    model = Seq2Seq(encoder_cfg, decoder_cfg)
    steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer, schedule = make_optimizer(model.parameters(), cfg.lr, total_steps, cfg.min_lr_ratio)
    max_len = cfg.max_words + 2

    history: dict[str, list] = {"step_loss": [], "epoch_valid_loss": [], "epoch_train_loss": []}
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        batches = data.make_batches(train_examples, cfg.batch_size, seed=cfg.seed * 1000 + epoch)
        running, tokens = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", file=sys.stdout, mininterval=2)
        for b in bar:
            loss = model(b.src_ids, b.src_lengths, b.tgt_in, b.tgt_out)  # mean over real tokens
            value = optimization_step(loss, model, optimizer, schedule, cfg.clip_grad)
            step += 1
            running += value * b.n_tokens
            tokens += b.n_tokens
            if step % 50 == 0 or step == total_steps:
                history["step_loss"].append((step / steps_per_epoch, value))
                bar.set_postfix(loss=f"{running / tokens:.3f}")
        valid_loss = mean_loss(model, valid_batches)
        history["epoch_train_loss"].append(running / max(tokens, 1))
        history["epoch_valid_loss"].append(valid_loss)
        log(f"epoch {epoch}: train loss {running / max(tokens, 1):.3f}, valid loss {valid_loss:.3f}")
        for (english, refs), hyp in zip(samples, translate(model, source, target, [e for e, _ in samples], max_len=max_len)):
            log(f"  {english!r} -> {hyp!r}  (reference: {refs[0]!r})")
    train_seconds = time.perf_counter() - started

    log("scoring the test split...")
    english = [e for e, _ in test_groups]
    references = [r for _, r in test_groups]
    test = score(translate(model, source, target, english, max_len=max_len), references, target)
    # Floor: "translate" by copying the (normalized) English sentence.
    baseline = score([" ".join(source.tokenize(e)) for e in english], references, target)
    test_batches = data.make_batches(data.encode_pairs(corpus.test, source, target), 256, seed=None)

    model.eval()
    config = save_encoder(out, model.encoder, source, training_run=str(out), train_config=asdict(cfg))
    save_decoder(out, model.decoder, target)
    metrics = {
        "train_seconds": round(train_seconds, 1),
        "total_seconds": None,
        "epochs": cfg.epochs,
        "steps": step,
        "train_pairs": len(train_pairs),
        "valid_pairs": len(corpus.valid),
        "test_pairs": len(corpus.test),
        "test_sentences": len(test_groups),
        "vocab_size": {"english": len(source), "french": len(target)},
        "valid_loss": round(history["epoch_valid_loss"][-1], 4),
        "valid_loss_per_epoch": [round(v, 4) for v in history["epoch_valid_loss"]],
        "train_loss_per_epoch": [round(v, 4) for v in history["epoch_train_loss"]],
        "test_loss": round(mean_loss(model, test_batches), 4),
        "test_bleu": test["bleu"],
        "test_exact_match": test["exact_match"],
        "bleu_signature": test["bleu_signature"],
        "baseline_copy_input_bleu": baseline["bleu"],
        "weights_sha256": config["files"]["weights"]["sha256"],
        "torch_threads": torch.get_num_threads(),
    }
    plot_losses(history, out / "loss_curve.png")
    metrics["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "metrics.json", metrics)
    write_model_card(out / "MODEL_CARD.md", cfg=asdict(cfg), config=config, metrics=metrics)
    log(json.dumps({k: metrics[k] for k in ("test_bleu", "baseline_copy_input_bleu", "test_exact_match",
                                            "valid_loss", "train_seconds")}))
    log(f"artifacts written to {out}/")
    return metrics


def main(argv: list[str] | None = None) -> None:
    train(config_from_args(TrainConfig, argv, presets={"smoke": SMOKE}))


if __name__ == "__main__":
    main()
