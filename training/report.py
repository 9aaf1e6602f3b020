"""What a person looks at after training: the loss curve and a short model card."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(history: dict[str, list], path: Path) -> None:
    """Training loss every 50 steps and validation loss per epoch, against epochs."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if history["step_loss"]:
        x, y = zip(*history["step_loss"])
        ax.plot(x, y, lw=0.8, alpha=0.6, label="train (batch)")
    epochs = range(1, len(history["epoch_valid_loss"]) + 1)
    ax.plot(epochs, history["epoch_train_loss"], "o-", label="train (epoch mean)")
    ax.plot(epochs, history["epoch_valid_loss"], "s-", label="validation")
    ax.set(xlabel="epoch", ylabel="cross-entropy per French token", title="GRU encoder-decoder, en->fr")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(path: Path, *, cfg: dict, config: dict, metrics: dict) -> None:
    enc, tok = config["encoder"], config["tokenizer"]
    d = 2 if enc["bidirectional"] else 1
    lines = [
        "# Model card: gru_encoder",
        "",
        "An Embedding + GRU text encoder for English, trained as the encoder half of an English->French",
        "GRU translator with attention. Only the encoder is served; the decoder is kept for evaluation.",
        "",
        "## Architecture",
        f"- `nn.Embedding({enc['vocab_size']}, {enc['hidden_size']}, padding_idx={enc['pad_id']})` -> "
        f"`nn.GRU({enc['hidden_size']}, {enc['hidden_size']}, num_layers={enc['num_layers']}, batch_first=True, "
        f"dropout={enc['dropout']}, bidirectional={enc['bidirectional']})`",
        f"- output `(B, T, {d * enc['hidden_size']})`, hidden `({enc['num_layers'] * d}, B, {enc['hidden_size']})`;"
        " padded positions are 0 (packed sequences).",
        f"- Tokenizer: word level, NFKC, lowercase, accents folded={tok['fold_accents']}, punctuation split, "
        f"one token per CJK character, `<eos>` appended, at most {tok['max_length']} tokens with `<eos>`.",
        "",
        "## Data",
        "Tatoeba (tatoeba.org), CC BY 2.0 FR, via ManyThings.org: English-French pairs with at most "
        f"{cfg['max_words']} tokens a side, split by English sentence (hash of its normalized form): "
        f"{metrics['train_pairs']} train / {metrics['valid_pairs']} valid / {metrics['test_pairs']} test pairs. "
        "No test English sentence is seen in training. The data contains some errors, as Tatoeba warns.",
        "",
        "## Results (held-out test split, greedy decoding)",
        f"- BLEU **{metrics['test_bleu']}** over {metrics['test_sentences']} sentences with all their references "
        f"(copy-the-input baseline: {metrics['baseline_copy_input_bleu']}).",
        f"- Exact match with one of the references: {metrics['test_exact_match']:.1%}.",
        f"- Validation loss {metrics['valid_loss']}, test loss {metrics['test_loss']} (cross-entropy per token).",
        f"- BLEU is computed on lowercased, tokenizer-normalized text: `{metrics['bleu_signature']}`.",
        f"- Training: {metrics['epochs']} epochs, {metrics['steps']} steps, {metrics['train_seconds']} s on "
        f"{metrics['torch_threads']} CPU threads.",
        "",
        "## Limits",
        f"- Trained on short, everyday sentences (<= {cfg['max_words']} tokens); longer input is encoded but is "
        "out of distribution.",
        f"- English words seen fewer than {cfg['src_min_freq']} times in training map to `<unk>`.",
        "",
        f"Weights sha256: `{config['files']['weights']['sha256']}`",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
