"""The optimization step shared by the translator's training and the textbook check in the tests:
Adam, a cosine learning-rate decay, gradient clipping."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, total_steps: int, min_lr_ratio: float = 0.05
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam, with the learning rate decayed on a cosine from `lr` to `lr * min_lr_ratio` over total_steps."""
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)),
    )
    return optimizer, schedule


def optimization_step(
    loss: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    clip_grad: float,
) -> float:
    """Backpropagate `loss`, clip the gradient norm, step optimizer and schedule; returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    schedule.step()
    return float(loss.detach())
