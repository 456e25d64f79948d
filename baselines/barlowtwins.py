"""Barlow Twins (Zbontar et al., ICML 2021): the two views' cross-correlation driven to the identity."""

from __future__ import annotations

from typing import Any

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from torch import Tensor

from tcl_ssl.methods.base import Method, TrainingDefaults, check_positive, check_size


class BarlowTwins(Method):
    """Barlow Twins with lightly's ``BarlowTwinsProjectionHead`` and ``BarlowTwinsLoss``.

    Both views go through the backbone and a 3-layer projector; each projection ``(B, D)`` is
    standardised per dimension over the batch, ``C = z0^T z1 / B`` is their ``(D, D)``
    cross-correlation, and the loss is ``scale_loss * (sum_i (1 - C_ii)^2 + lambda_param *
    sum_{i != j} C_ij^2)``. No labels, no targets.

    Defaults: projector 2048 -> 2048 -> 2048, ``lambda_param`` 0.0051, ``scale_loss`` 0.1 and
    the ``byol`` augmentation pipeline (crop 0.08-1, jitter 0.4/0.4/0.2/0.1, solarization p 0.2
    on the second view only, no blur at 32 px) from solo-learn's CIFAR-10 configuration
    ``scripts/pretrain/cifar/barlow.yaml`` and its ``asymmetric.yaml`` (``lamb``: solo-learn's
    default, the official code's 0.0051); LARS lr 0.2 at batch 256 (weights; the official code's
    0.0048 for biases and norms is not separate here), weight decay 1.5e-6, 10 warm-up epochs from
    the official code (facebookresearch/barlowtwins, as lightly's ImageNet benchmark): solo-learn's
    lr 0.3 and weight decay 1e-4 belong to its own LARS (trust coefficient 0.02, clipped), about
    20x the steps of lightly's (0.001).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        lambda_param: weight of the off-diagonal (redundancy reduction) term (> 0).
        scale_loss: factor of the whole loss (> 0).
        hidden_dim: hidden width of the projector.
        output_dim: output width of the projector.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "barlowtwins"
    views = (2, 2)
    compared_in = ("self-supervised",)
    defaults = TrainingDefaults(optimizer="lars", lr=0.2, weight_decay=1.5e-6, warmup_epochs=10, augmentation="byol")
    source = "solo-learn cifar/barlow.yaml (augmentation: its asymmetric.yaml); optimiser: official code"
    search_space = {"lambda_param": (0.0025, 0.0051, 0.01)}

    def __init__(
        self,
        *args: Any,
        lambda_param: float = 0.0051,
        scale_loss: float = 0.1,
        hidden_dim: int = 2048,
        output_dim: int = 2048,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_positive("lambda_param", lambda_param)
        check_positive("scale_loss", scale_loss)
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        self.scale_loss = scale_loss
        self.projection_head = BarlowTwinsProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=True)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z0, z1 = self.project_views(views, self.projection_head)
        return self.scale_loss * self.float32_loss(self.criterion, z0, z1)
