"""The optimiser machinery shared by every method: SGD or LARS, linear warm-up, cosine decay.

Learning rates are given at batch size 256 and scaled linearly with the global batch (the
convention of SimCLR, MoCo, BYOL and solo-learn). Norm and bias parameters get no weight decay,
and LARS leaves them out of its layer-wise adaptation (lightly's ``LARS`` skips any parameter
group whose weight decay is 0), as SimCLR and BYOL do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_warmup_schedule
from torch import nn

#: the optimisers :class:`OptimConfig` accepts
OPTIMIZERS = ("sgd", "lars")
#: the batch size the configured learning rates refer to
REFERENCE_BATCH = 256


@dataclass
class OptimConfig:
    """Optimiser settings of a :class:`~tcl_ssl.methods.Method`.

    The optimiser is SGD or lightly's LARS (both with ``momentum``), with a per-step schedule of
    ``warmup_epochs`` of linear warm-up followed by a cosine decay to 0.001 x the peak.

    Attributes:
        lr: peak learning rate at batch size 256; it is scaled linearly with the global batch
            size (``batch_size`` per process times the number of processes).
        momentum: momentum of SGD or LARS, in ``[0, 1)``.
        weight_decay: weight decay of the weights (norms and biases get none), >= 0.
        warmup_epochs: epochs of linear warm-up (>= 0).
        batch_size: batch size per process.
        optimizer: ``"sgd"`` or ``"lars"``.

    Raises:
        ValueError: for an unknown ``optimizer`` or a value out of range.

    Example:
        >>> from tcl_ssl.methods import OptimConfig
        >>> config = OptimConfig(lr=0.3, batch_size=512, optimizer="lars")
        >>> config.peak_lr(world_size=2)  # 0.3 x 1024 / 256
        1.2
    """

    lr: float = 0.06
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    batch_size: int = 256
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def peak_lr(self, world_size: int = 1) -> float:
        """The peak learning rate for the global batch ``batch_size * world_size``."""
        return self.lr * self.batch_size * world_size / REFERENCE_BATCH


def parameter_groups(module: nn.Module, undecayed: nn.Module | None = None) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weights (decayed) and norms/biases (no weight decay).

    Every parameter of the sub-module ``undecayed`` (e.g. an online probe) goes to the second
    group. Frozen parameters (``requires_grad=False``, e.g. momentum encoders) are left out.

    Args:
        module: the module whose parameters are grouped.
        undecayed: a sub-module whose parameters all go to the undecayed group.

    Returns:
        ``[{"params": decayed}, {"params": undecayed, "weight_decay": 0.0}]``, as optimisers
        take parameter groups.
    """
    exempt = {id(p) for p in undecayed.parameters()} if undecayed is not None else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in module.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or id(param) in exempt else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    module: nn.Module, config: OptimConfig, world_size: int = 1, undecayed: nn.Module | None = None
) -> torch.optim.Optimizer:
    """SGD or lightly's LARS over :func:`parameter_groups` of ``module`` at the scaled peak lr.

    Args:
        module: the module to optimise.
        config: the optimiser settings.
        world_size: the number of processes (the lr scales with the global batch).
        undecayed: a sub-module whose parameters get no weight decay.

    Returns:
        The optimiser, with the two parameter groups of :func:`parameter_groups`.
    """
    groups = parameter_groups(module, undecayed)
    lr = config.peak_lr(world_size)
    if config.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: float, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule over ``total_steps`` (``epochs`` epochs).

    The multiplier is a plain function of the step, not saved in the scheduler's state, so a
    run resumed with more epochs follows its new horizon instead of the checkpoint's.

    Args:
        optimizer: the optimiser whose learning rates are scheduled.
        config: the settings (``warmup_epochs``).
        total_steps: optimiser steps of the whole run (Lightning's estimate; truncated to an int).
        epochs: epochs of the whole run.

    Returns:
        A ``LambdaLR`` to step once per optimiser step; see :func:`lr_factor`.
    """
    total = max(int(total_steps), 1)
    steps_per_epoch = max(total // max(epochs, 1), 1)
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, warmup=warmup, total=total))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier of ``step``: linear warm-up over ``warmup`` steps, then cosine
    decay to 0.001 at step ``total`` (held there after it)."""
    return cosine_warmup_schedule(min(step, total), total, 1.0, 0.001, warmup, 0.0)
