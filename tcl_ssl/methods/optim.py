"""Optimiser settings shared by every method, and the learning-rate schedule."""

from __future__ import annotations

from dataclasses import dataclass

from lightly.utils.scheduler import cosine_warmup_schedule


@dataclass
class OptimConfig:
    """SGD with momentum and a cosine schedule with linear warm-up (per step).

    ``lr`` is the learning rate at batch size 256; it is scaled linearly with the global batch
    size (``batch_size`` per process times the number of processes).
    """

    lr: float = 0.06
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine to 0.001."""
    return cosine_warmup_schedule(min(step, total), total, 1.0, 0.001, warmup, 0.0)
