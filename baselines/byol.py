"""BYOL (Grill et al., NeurIPS 2020): an online network predicts a momentum target's projection."""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor

from tcl_ssl.methods.base import TrainingDefaults, check_size
from tcl_ssl.methods.momentum import MomentumMethod, momentum_copy


class BYOL(MomentumMethod):
    """BYOL with lightly's ``BYOLProjectionHead``, ``BYOLPredictionHead`` and ``NegativeCosineSimilarity``.

    Online: backbone -> projection -> prediction; target: momentum copy of backbone and
    projection. The loss is the paper's symmetric ``2 - 2 cos`` summed over both directions,
    ``2 (NCS(p0, z1) + NCS(p1, z0))`` (a constant 4 below it).

    Defaults: LARS (lightly's, trust coefficient 0.001), lr 0.45 at batch 256, weight decay
    1e-6, 10 warm-up epochs, momentum 0.99 -> 1.0 (cosine by step); heads 4096 -> 256; the
    ``byol`` augmentation pipeline (two asymmetric views). Source: the official code's preset
    for runs of up to 100 epochs (google-deepmind/deepmind-research ``byol/configs/byol.py``,
    as lightly's ImageNet BYOL benchmark); heads and augmentation: the paper.

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        hidden_dim: hidden width of the projection and prediction heads.
        output_dim: output width of the projection and prediction heads.
        momentum_start: EMA momentum of the target at the first step.
        momentum_end: EMA momentum at the last step (cosine in between).
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "byol"
    views = (2, 2)
    defaults = TrainingDefaults(optimizer="lars", lr=0.45, weight_decay=1e-6, warmup_epochs=10, augmentation="byol")
    source = "BYOL official code, up-to-100-epoch preset (as lightly's ImageNet benchmark); heads, augmentation: paper"
    search_space = {"momentum_start": (0.9, 0.99)}

    def __init__(
        self,
        *args: Any,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, momentum_start=momentum_start, momentum_end=momentum_end, **kwargs)
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        self.projection_head = BYOLProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z_online = self.project_views(views, self.projection_head)
        p0, p1 = (self.prediction_head(z) for z in z_online)
        with torch.no_grad():
            z0, z1 = self.project_views(views, self.projection_head_momentum, self.backbone_momentum)
        return 2 * (self.float32_loss(self.criterion, p0, z1) + self.float32_loss(self.criterion, p1, z0))
