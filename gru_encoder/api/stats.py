"""What one server batch cost and carried: the service fills it, the host's metrics record it."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("tokenize", "forward", "serialize")


@dataclass
class BatchStats:
    """What one server batch cost and carried, per request where it applies (service.EncoderService.handle)."""

    texts: list[int] = field(default_factory=list)  # texts encoded per request (0 when refused)
    tokens: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
