"""Supervised Contrastive Learning (Khosla et al., NeurIPS 2020), pytorch-metric-learning's loss."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.utils import concat_all_gather
from lightly.utils import dist
from pytorch_metric_learning.losses import SupConLoss
from torch import Tensor

from tcl_ssl.methods import Method
from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size


class SupCon(Method):
    """SupCon (the L_out form) with pytorch-metric-learning's ``SupConLoss`` on all views and labels.

    Every view of every image is an anchor; its positives are all views of the images of its
    class. Under DDP, projections and labels are gathered (with gradients, lightly's
    ``gather``) and every process computes the loss of the global batch, which gives the
    single-process gradient. PML's loss is multiplied by ``temperature / base_temperature``
    (0.1 / 0.07 by default), a constant factor on the gradient.

    Defaults: head ``Linear(d, d) - ReLU - Linear(d, 128)`` without BatchNorm
    (``head_batch_norm=True`` adds BatchNorm after both linear layers, as in lightly's SimCLR
    head that TCL and SimCLR use); temperature 0.1, base temperature 0.07; SGD lr 0.125 at
    batch 256, weight decay 1e-4, cosine with 10 warm-up epochs; the ``simaug`` augmentation
    pipeline. Source: the official code (HobbitLong/SupContrast: ``networks/resnet_big.py``,
    ``losses.py``, ``main_supcon.py`` and the README's CIFAR command).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: SupCon's temperature (> 0).
        base_temperature: the loss is scaled by ``temperature / base_temperature`` (> 0).
        hidden_dim: hidden width of the head; ``None``: the backbone's width.
        output_dim: output width of the head.
        head_batch_norm: BatchNorm after both linear layers of the head.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "supcon"
    without_labels = False
    with_labels = True
    defaults = TrainingDefaults(optimizer="sgd", lr=0.125, weight_decay=1e-4, warmup_epochs=10, augmentation="simaug")
    source = "SupCon official code (HobbitLong/SupContrast) README and main_supcon.py"
    auto_options = {"hidden_dim": "backbone width"}

    def __init__(
        self,
        *args: Any,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        head_batch_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_positive("temperature", temperature)
        check_positive("base_temperature", base_temperature)
        hidden_dim = self.feature_dim if hidden_dim is None else hidden_dim
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        if not isinstance(head_batch_norm, bool):
            raise ValueError(f"head_batch_norm must be true or false, got {head_batch_norm!r}")
        self.scale = temperature / base_temperature
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim, hidden_dim, output_dim, batch_norm=head_batch_norm
        )
        self.criterion = SupConLoss(temperature=temperature)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        assert labels is not None
        return self.contrast(torch.cat(self.project_views(views, self.projection_head)), labels.repeat(len(views)))

    def contrast(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The scaled SupCon loss of ``(N, D)`` projections with ``(N,)`` labels, over the global
        batch: under DDP every process gathers all projections (with gradients) and labels."""
        if dist.world_size() > 1:
            embeddings = torch.cat(dist.gather(embeddings))
            labels = concat_all_gather(labels)
        return self.scale * self.float32_loss(self.criterion, embeddings, labels=labels)
