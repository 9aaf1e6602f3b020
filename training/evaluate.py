"""Held-out evaluation of the translator: loss, greedy translations, BLEU and exact match."""

from __future__ import annotations

import sacrebleu
import torch

from gru_encoder.core.model import pad_batch
from gru_encoder.core.tokenizer import Tokenizer
from training.data import Batch
from training.seq2seq import Seq2Seq


@torch.no_grad()
def mean_loss(model: Seq2Seq, batches: list[Batch]) -> float:
    """Teacher-forced cross-entropy per target token (padding ignored)."""
    model.eval()
    total, tokens = 0.0, 0
    for b in batches:
        total += float(model(b.src_ids, b.src_lengths, b.tgt_in, b.tgt_out)) * b.n_tokens
        tokens += b.n_tokens
    return total / max(tokens, 1)


@torch.no_grad()
def translate(
    model: Seq2Seq, source: Tokenizer, target: Tokenizer, english: list[str], *, max_len: int, batch_size: int = 256
) -> list[str]:
    """Greedy French translations, as space-joined normalized tokens."""
    model.eval()
    out: list[str] = []
    for start in range(0, len(english), batch_size):
        src_ids, src_lengths = pad_batch([source.encode(t).ids for t in english[start : start + batch_size]])
        out += [" ".join(target.decode(ids)) for ids in model.greedy(src_ids, src_lengths, max_len)]
    return out


def score(
    hypotheses: list[str], references: list[list[str]], target: Tokenizer
) -> dict[str, float]:
    """Corpus BLEU (sacrebleu) against all references of each sentence, and the exact-match rate.

    References go through the same normalization as the model's French output (lowercase, the
    tokenizer's punctuation split), so BLEU is computed on normalized tokens with tokenize="none".
    """
    refs = [[" ".join(target.tokenize(r)) for r in rs] for rs in references]
    most = max(len(rs) for rs in refs)
    streams = [[rs[k] if k < len(rs) else None for rs in refs] for k in range(most)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams, tokenize="none", force=True)
    exact = sum(h in rs for h, rs in zip(hypotheses, refs)) / len(hypotheses)
    return {"bleu": round(bleu.score, 2), "exact_match": round(exact, 4), "bleu_signature": str(bleu)}
