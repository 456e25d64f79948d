"""MoCo v2 (Chen et al., 2020): a momentum key encoder and a queue of negatives, symmetric loss."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from torch import Tensor, nn

from tcl_ssl.methods.base import TrainingDefaults
from tcl_ssl.methods.momentum import MomentumMethod, momentum_copy


class MoCo(MomentumMethod):
    """MoCo v2 with lightly's ``MoCoProjectionHead``, momentum encoder and ``NTXentLoss`` queue.

    The query encoder is the backbone + head; the key encoder is their momentum copy. Both
    views go through both encoders; the loss is symmetric, ``(L(q0, k1) + L(q1, k0)) / 2``,
    where ``L`` is lightly's ``NTXentLoss`` with a memory bank of ``queue_size`` keys (its
    positives are the query's own key, its negatives the queue, which every call fills with its
    keys, gathered across processes). The queue is in the checkpoint.

    Defaults, from solo-learn's CIFAR-10 recipe ``scripts/pretrain/cifar/mocov2plus.yaml``:
    head 2048 -> 256, temperature 0.2, momentum 0.99 -> 0.999 (cosine by step), SGD lr 0.3 at
    batch 256, weight decay 1e-4, 10 warm-up epochs; the ``mocov2`` augmentation (the paper's
    ``aug_plus``). Queue 4096 keys, as lightly's CIFAR-10 benchmark: a queue larger than the
    keys a short run produces (solo-learn keeps 2 x 32768 for 1000 CIFAR epochs) would hold
    lightly's random initial entries for most of it.
    """

    name = "moco"
    views = (2, 2)
    defaults = TrainingDefaults(optimizer="sgd", lr=0.3, weight_decay=1e-4, warmup_epochs=10, augmentation="mocov2")
    source = "solo-learn cifar/mocov2plus.yaml; queue: lightly CIFAR-10 benchmark"

    def __init__(
        self,
        *args,
        temperature: float = 0.2,
        queue_size: int = 4096,
        hidden_dim: int = 2048,
        output_dim: int = 256,
        momentum_start: float = 0.99,
        momentum_end: float = 0.999,
        **kwargs,
    ) -> None:
        super().__init__(*args, momentum_start=momentum_start, momentum_end=momentum_end, **kwargs)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.projection_head = MoCoProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = self.build_criterion(temperature, queue_size, output_dim)

    def build_criterion(self, temperature: float, queue_size: int, output_dim: int) -> nn.Module:
        """lightly's NT-Xent with a queue; its buffers are made persistent so checkpoints keep them."""
        criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, output_dim), gather_distributed=True)
        bank = criterion.memory_bank
        for name in ("bank", "bank_ptr"):  # lightly registers them with persistent=False
            bank.register_buffer(name, getattr(bank, name), persistent=True)
        return criterion

    def contrast(self, queries: Tensor, keys: Tensor, labels: Tensor | None) -> Tensor:
        """The criterion on ``(B, D)`` queries and their ``(B, D)`` keys (labels unused by NT-Xent)."""
        return self.criterion(queries, keys)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        q0, q1 = self.project_views(views, self.projection_head)
        with torch.no_grad():
            k0, k1 = self.project_views(views, self.projection_head_momentum, self.backbone_momentum)
        return 0.5 * (self.contrast(q0, k1, labels) + self.contrast(q1, k0, labels))
