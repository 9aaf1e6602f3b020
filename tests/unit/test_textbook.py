"""The textbook case, checked with the project's optimization step: a GRU learns "hello" -> "ohlol"."""

from __future__ import annotations

import torch
from torch import nn

from training.loop import make_optimizer, optimization_step

SYMBOLS = "helo"  # 4 symbols


def one_hot(word: str) -> torch.Tensor:
    """(1, T, 4) one-hot rows, batch_first."""
    return nn.functional.one_hot(torch.tensor([[SYMBOLS.index(c) for c in word]]), len(SYMBOLS)).float()


class CharGRU(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.gru = nn.GRU(len(SYMBOLS), hidden, batch_first=True)
        self.head = nn.Linear(hidden, len(SYMBOLS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.gru(x)  # (1, T, hidden)
        return self.head(output)  # (1, T, 4) logits


def test_gru_learns_hello_to_ohlol_within_a_few_hundred_steps() -> None:
    torch.manual_seed(0)
    x, target = one_hot("hello"), torch.tensor([SYMBOLS.index(c) for c in "ohlol"])  # (1, 5, 4), (5,)
    model = CharGRU()
    steps = 300
    optimizer, schedule = make_optimizer(model.parameters(), lr=0.05, total_steps=steps)

    def predicted() -> str:
        with torch.no_grad():
            return "".join(SYMBOLS[i] for i in model(x)[0].argmax(-1).tolist())

    assert predicted() != "ohlol"  # it has to learn it
    # "l" maps to "l" at step 3 but to "o" at step 4: only the recurrent state can tell them apart.
    learned_at = None
    for step in range(1, steps + 1):
        loss = nn.functional.cross_entropy(model(x)[0], target)
        final_loss = optimization_step(loss, model, optimizer, schedule, clip_grad=1.0)
        if learned_at is None and predicted() == "ohlol":
            learned_at = step
    assert learned_at is not None and learned_at <= steps, "never learned the mapping"
    assert predicted() == "ohlol" and final_loss < 0.05, final_loss
