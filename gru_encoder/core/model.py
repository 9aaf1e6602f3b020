"""The one encoder definition: nn.Embedding followed by nn.GRU, batch_first, packed over lengths.

Shapes follow nn.GRU with batch_first=True, with D = 2 if bidirectional else 1, L = num_layers:
    input_ids (B, T), lengths (B,), h0 (L*D, B, H)  ->  output (B, T, D*H), hidden (L*D, B, H)
Sequences are packed, so padding never enters a result: a sentence gives the same tensors alone or
beside a longer one up to float rounding (a batch of another size takes other matrix kernels: within
1e-6 in the tests), output at padded positions is exactly 0, and `hidden` is the state after each
sequence's own last token (for the backward direction: after its first token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class EncoderConfig:
    """Constructor arguments of `Encoder`; saved in config.json and enough to rebuild it."""

    vocab_size: int
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between GRU layers (nn.GRU's meaning); needs num_layers >= 2
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(
                f"vocab_size, hidden_size and num_layers must be >= 1 (got {self.vocab_size}, "
                f"{self.hidden_size}, {self.num_layers})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError(
                f"dropout={self.dropout} has no effect with num_layers=1 (nn.GRU applies it between "
                "layers): set dropout=0 or num_layers>=2"
            )
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id={self.pad_id} is outside the vocab (size {self.vocab_size})")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


class Encoder(nn.Module):
    """Embedding + GRU text encoder (see the module docstring for shapes)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_id)
        self.gru = nn.GRU(
            config.hidden_size,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout,
            bidirectional=config.bidirectional,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        h0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch: (B, T) ids and (B,) lengths -> output (B, T, D*H), hidden (L*D, B, H)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        batch, seq = input_ids.shape
        if lengths is None:
            lengths = torch.full((batch,), seq, dtype=torch.long)
        # pack_padded_sequence wants lengths on the CPU as int64, whatever the model's device.
        lengths = lengths.detach().to("cpu", torch.long)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 1 or int(lengths.max()) > seq):
            raise ValueError(f"every length must be in [1, {seq}], got {lengths.tolist()}")
        if h0 is not None:
            want = (self.config.num_layers * self.config.num_directions, batch, self.config.hidden_size)
            if tuple(h0.shape) != want:
                raise ValueError(f"h0 must have shape {want}, got {tuple(h0.shape)}")

        embedded = self.embedding(input_ids)  # (B, T, H)
        # enforce_sorted=False: the GRU sorts internally and returns output and hidden (and reads
        # h0) in the caller's batch order.
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        packed_out, hidden = self.gru(packed, h0)  # hidden: (L*D, B, H)
        # total_length keeps T equal to the input's, even when every sequence is shorter.
        output, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=seq)  # (B, T, D*H)
        return output, hidden


def pad_batch(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into input_ids (B, T) with T = the longest, and lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)  # (B,)
    seq = int(lengths.max()) if sequences else 0
    input_ids = torch.full((len(sequences), seq), pad_id, dtype=torch.long)  # (B, T)
    for row, s in enumerate(sequences):
        input_ids[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return input_ids, lengths
