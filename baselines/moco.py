"""MoCo v2 (Chen et al., 2020): a momentum key encoder and a queue of negatives, symmetric loss."""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from torch import Tensor

from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size
from tcl_ssl.methods.momentum import MomentumMethod, momentum_copy


class MoCo(MomentumMethod):
    """MoCo v2 with lightly's ``MoCoProjectionHead``, momentum encoder and ``NTXentLoss`` queue.

    The query encoder is the backbone + head; the key encoder is their momentum copy. Both
    views go through both encoders, and the loss is symmetric, ``(L(q0, k1) + L(q1, k0)) / 2``:
    each query's positive is its image's key from the other view, its negatives the queue of
    ``queue_size`` keys as it was before this step. Both terms are one call of lightly's
    ``NTXentLoss`` with a memory bank on the stacked queries and keys, which then adds the
    ``2B`` keys (gathered across processes) to the queue once. The queue is in the checkpoint.

    Defaults: head 2048 -> 256, temperature 0.2, momentum 0.99 -> 0.999 (cosine by step), SGD
    lr 0.3 at batch 256, weight decay 1e-4, 10 warm-up epochs; the ``mocov2`` augmentation
    pipeline (crop 0.2-1); a queue of 4096 keys. Source: solo-learn's CIFAR-10 configuration
    ``scripts/pretrain/cifar/mocov2plus.yaml``; the augmentation: the MoCo v2 paper; the
    queue size: lightly's CIFAR-10 benchmark.

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: NT-Xent's temperature (> 0).
        queue_size: keys in the queue.
        hidden_dim: hidden width of the projection head.
        output_dim: output width of the projection head (and of the keys).
        momentum_start: EMA momentum of the key encoder at the first step.
        momentum_end: EMA momentum at the last step (cosine in between).
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "moco"
    views = (2, 2)
    defaults = TrainingDefaults(optimizer="sgd", lr=0.3, weight_decay=1e-4, warmup_epochs=10, augmentation="mocov2")
    source = "solo-learn cifar/mocov2plus.yaml; queue: lightly CIFAR-10 benchmark; augmentation: MoCo v2"
    search_space = {"temperature": (0.1, 0.2, 0.5), "momentum_start": (0.9, 0.99), "queue_size": (1024, 4096)}

    def __init__(
        self,
        *args: Any,
        temperature: float = 0.2,
        queue_size: int = 4096,
        hidden_dim: int = 2048,
        output_dim: int = 256,
        momentum_start: float = 0.99,
        momentum_end: float = 0.999,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, momentum_start=momentum_start, momentum_end=momentum_end, **kwargs)
        check_positive("temperature", temperature)
        for name, value in (("queue_size", queue_size), ("hidden_dim", hidden_dim), ("output_dim", output_dim)):
            check_size(name, value)
        self.temperature = temperature
        self.queue_size = queue_size
        self.output_dim = output_dim
        self.projection_head = MoCoProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(
            temperature=temperature, memory_bank_size=(queue_size, output_dim), gather_distributed=True
        )
        bank = self.criterion.memory_bank
        for name in ("bank", "bank_ptr"):  # lightly (1.6) registers them with persistent=False
            bank.register_buffer(name, getattr(bank, name), persistent=True)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        q0, q1 = self.project_views(views, self.projection_head)
        with torch.no_grad():
            k0, k1 = self.project_views(views, self.projection_head_momentum, self.backbone_momentum)
        return self.symmetric_loss(q0, q1, k0, k1, labels)

    def symmetric_loss(self, q0: Tensor, q1: Tensor, k0: Tensor, k1: Tensor, labels: Tensor | None) -> Tensor:
        """``(L(q0, k1) + L(q1, k0)) / 2`` against the queue before this step; then enqueue the keys."""
        return self.float32_loss(self.criterion, torch.cat([q0, q1]), torch.cat([k1, k0]))
