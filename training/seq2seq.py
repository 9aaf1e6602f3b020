"""The translator the encoder is trained in: the shared Encoder + a GRU decoder with attention.

Only the encoder is served. The decoder uses Luong-style "general" attention computed after its GRU,
so that with teacher forcing the whole target sequence runs in one GRU call (fast on a CPU), and the
same step function decodes greedily one token at a time. The output layer is an adaptive softmax
(PyTorch's AdaptiveLogSoftmaxWithLoss over the frequency-sorted vocab): on a 2-core CPU a full
softmax over ~13k French words costs more than the rest of the model together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gru_encoder.core.model import Encoder, EncoderConfig
from gru_encoder.core.tokenizer import EOS_ID, PAD_ID, SOS_ID


@dataclass(frozen=True)
class DecoderConfig:
    """Constructor arguments of `AttnDecoder`; saved as decoder_config.json."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    encoder_dim: int  # D*H of the encoder's output
    encoder_directions: int  # D: the final hidden states of both directions are merged
    dropout: float = 0.1
    # Adaptive-softmax cluster boundaries (ids are sorted by frequency); () = from the vocab size.
    cutoffs: tuple[int, ...] = ()

    def head_cutoffs(self) -> list[int]:
        return list(self.cutoffs) or [max(2, self.vocab_size // 8), max(3, self.vocab_size // 3)]


class AttnDecoder(nn.Module):
    """GRU decoder with attention over the encoder's output (training and evaluation only)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        h, e = config.hidden_size, config.encoder_dim
        self.embedding = nn.Embedding(config.vocab_size, h, padding_idx=PAD_ID)
        gru_dropout = config.dropout if config.num_layers > 1 else 0.0
        self.gru = nn.GRU(h, h, config.num_layers, batch_first=True, dropout=gru_dropout)
        # Merges the two directions' final states of a bidirectional encoder into one start state.
        self.bridge = nn.Linear(config.encoder_directions * h, h) if config.encoder_directions > 1 else None
        self.attn_key = nn.Linear(e, h, bias=False)
        self.combine = nn.Linear(h + e, h)
        self.head = nn.AdaptiveLogSoftmaxWithLoss(h, config.vocab_size, config.head_cutoffs(), div_value=4.0)
        self.dropout = nn.Dropout(config.dropout)

    def initial_state(self, encoder_hidden: torch.Tensor) -> torch.Tensor:
        """Encoder hidden (L*D, B, H) -> decoder start state (L, B, H)."""
        if self.bridge is None:
            return encoder_hidden
        layers, batch = self.config.num_layers, encoder_hidden.shape[1]
        d = self.config.encoder_directions
        merged = encoder_hidden.view(layers, d, batch, -1).permute(0, 2, 1, 3).reshape(layers, batch, -1)
        return torch.tanh(self.bridge(merged))  # (L, B, H)

    def forward(
        self,
        tgt_in: torch.Tensor,  # (B, U)
        state: torch.Tensor,  # (L, B, H)
        keys: torch.Tensor,  # (B, S, H): attn_key(encoder output), computed once per batch
        values: torch.Tensor,  # (B, S, E): the encoder output
        src_mask: torch.Tensor,  # (B, S) True at real tokens
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, U, H) for `head` at every target position, and the new state (L, B, H)."""
        dec, state = self.gru(self.dropout(self.embedding(tgt_in)), state)  # (B, U, H)
        scores = dec @ keys.transpose(1, 2)  # (B, U, S)
        scores = scores.masked_fill(~src_mask[:, None, :], float("-inf"))
        context = torch.softmax(scores, dim=-1) @ values  # (B, U, E)
        combined = torch.tanh(self.combine(torch.cat([dec, context], dim=-1)))  # (B, U, H)
        return self.dropout(combined), state


class Seq2Seq(nn.Module):
    def __init__(self, encoder_config: EncoderConfig, decoder_config: DecoderConfig):
        super().__init__()
        self.encoder = Encoder(encoder_config)
        self.decoder = AttnDecoder(decoder_config)

    def _encode(self, src_ids: torch.Tensor, src_lengths: torch.Tensor):
        output, hidden = self.encoder(src_ids, src_lengths)  # (B, S, D*H), (L*D, B, H)
        mask = torch.arange(src_ids.shape[1])[None, :] < src_lengths[:, None]  # (B, S)
        return output, self.decoder.attn_key(output), mask, self.decoder.initial_state(hidden)

    def forward(
        self, src_ids: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced mean cross-entropy per real (non-<pad>) target token."""
        values, keys, mask, state = self._encode(src_ids, src_lengths)
        features, _ = self.decoder(tgt_in, state, keys, values, mask)  # (B, U, H)
        real = tgt_out != PAD_ID  # (B, U): padding never counts
        return self.decoder.head(features[real], tgt_out[real]).loss

    @torch.no_grad()
    def greedy(self, src_ids: torch.Tensor, src_lengths: torch.Tensor, max_len: int) -> list[list[int]]:
        """Greedy translation: French ids per sentence, without <eos>."""
        values, keys, mask, state = self._encode(src_ids, src_lengths)
        batch = src_ids.shape[0]
        token = torch.full((batch, 1), SOS_ID, dtype=torch.long)  # (B, 1)
        done = torch.zeros(batch, dtype=torch.bool)
        steps = []
        for _ in range(max_len):
            features, state = self.decoder(token, state, keys, values, mask)  # (B, 1, H)
            token = self.decoder.head.predict(features[:, 0])[:, None]  # (B, 1)
            steps.append(token[:, 0])
            done |= token[:, 0] == EOS_ID
            if bool(done.all()):
                break
        ids = torch.stack(steps, dim=1).tolist()  # (B, steps)
        return [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in ids]
