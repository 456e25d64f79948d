"""BYOL (Grill et al., NeurIPS 2020): an online network predicts a momentum target's projection."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor, nn

from tcl_ssl.methods.base import TrainingDefaults
from tcl_ssl.methods.momentum import MomentumMethod, momentum_copy


class BYOL(MomentumMethod):
    """BYOL with lightly's ``BYOLProjectionHead``, ``BYOLPredictionHead`` and ``NegativeCosineSimilarity``.

    Online: backbone -> projection -> prediction; target: momentum copy of backbone and
    projection. The loss is the paper's symmetric ``2 - 2 cos`` summed over both directions,
    ``2 (NCS(p0, z1) + NCS(p1, z0))`` (a constant 4 below it).

    Defaults, from solo-learn's CIFAR-10 recipe ``scripts/pretrain/cifar/byol.yaml``: projection
    4096 -> 256, prediction 4096 -> 256, momentum 0.99 -> 1.0 (cosine by step), LARS lr 1.0 at
    batch 256, weight decay 1e-5, 10 warm-up epochs; the ``byol`` augmentation (the paper's two
    asymmetric views). LARS is lightly's (trust coefficient 0.001, as the BYOL paper's), where
    solo-learn clips the adapted lr with a coefficient of 0.02.
    """

    name = "byol"
    views = (2, 2)
    defaults = TrainingDefaults(optimizer="lars", lr=1.0, weight_decay=1e-5, warmup_epochs=10, augmentation="byol")
    source = "solo-learn cifar/byol.yaml; heads and augmentation: BYOL paper"

    def __init__(
        self,
        *args,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, momentum_start=momentum_start, momentum_end=momentum_end, **kwargs)
        self.projection_head = BYOLProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z_online = self.project_views(views, self.projection_head)
        p0, p1 = (self.prediction_head(z) for z in z_online)
        with torch.no_grad():
            z0, z1 = self.project_views(views, self.projection_head_momentum, self.backbone_momentum)
        return 2 * (self.criterion(p0, z1) + self.criterion(p1, z0))
