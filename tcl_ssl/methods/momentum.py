"""Momentum (EMA) target networks, shared by MoCo, BYOL and TCL inside MoCo.

A target network is a frozen copy of an online module, moved toward it after every step by
lightly's ``update_momentum`` with a momentum that follows lightly's ``cosine_schedule`` by
optimiser step, from ``momentum_start`` to ``momentum_end``. The targets are submodules, so
they are in the checkpoint; the schedule is a function of ``global_step``, so a resumed run
continues it.
"""

from __future__ import annotations

import copy
from typing import Any

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from tcl_ssl.methods.base import Method, check_unit_interval


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (``requires_grad`` off): the start of its target network."""
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


class MomentumMethod(Method):
    """A :class:`Method` with target networks updated by EMA every training step.

    Subclasses create their targets with :func:`momentum_copy`: by default the pairs
    (:meth:`momentum_pairs`) are the backbone and the projection head with their copies
    ``backbone_momentum`` and ``projection_head_momentum``; a subclass with other targets
    overrides :meth:`momentum_pairs`.

    Args:
        *args: :class:`Method`'s arguments.
        momentum_start: EMA momentum at the first step, in [0, 1].
        momentum_end: EMA momentum at the last step (cosine in between), in [0, 1].
        **kwargs: :class:`Method`'s keyword arguments.

    Raises:
        ValueError: for a momentum outside [0, 1].
    """

    projection_head: nn.Module
    backbone_momentum: nn.Module
    projection_head_momentum: nn.Module

    def __init__(self, *args: Any, momentum_start: float, momentum_end: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_unit_interval("momentum_start", momentum_start)
        check_unit_interval("momentum_end", momentum_end)
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, target)`` module pairs to update."""
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def ema_momentum(self) -> float:
        """The momentum of the current step (cosine schedule over the run's optimiser steps)."""
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        return cosine_schedule(min(self.global_step, total), total, self.momentum_start, self.momentum_end)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Move every target toward its online module by :meth:`ema_momentum`, once per optimiser step."""
        if batch_idx % self.trainer.accumulate_grad_batches:
            return  # once per optimiser step, at its first micro-batch
        momentum = self.ema_momentum()
        for online, target in self.momentum_pairs():
            update_momentum(online, target, momentum)
        self.log("ema_momentum", momentum, on_step=True, on_epoch=False)
