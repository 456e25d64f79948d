"""SimCLR (Chen et al., ICML 2020): two views, a projection head, NT-Xent over the batch."""

from __future__ import annotations

from typing import Any

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor

from tcl_ssl.methods import Method
from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size


class SimCLR(Method):
    """SimCLR with lightly's ``SimCLRProjectionHead`` and ``NTXentLoss`` (gathered across processes).

    Two views of each image; each view's positive is the other view of its image, its negatives
    every other view in the (global) batch. Self-supervised only: NT-Xent has no use for labels
    (``supcon`` or ``tcl --supervised`` do).

    Defaults: temperature 0.5; LARS, lr 1.0 at batch 256, weight decay 1e-4, 10 warm-up epochs;
    the ``simclr`` augmentation pipeline (jitter strength 0.5, no blur at 32 px); head of 2
    layers, hidden width = backbone width, output 128, lightly's BatchNorm layout. Source: the
    official code's CIFAR-10 command (google-research/simclr README) and the paper (head).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: NT-Xent's temperature (> 0).
        hidden_dim: hidden width of the head; ``None``: the backbone's width.
        output_dim: output width of the head.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "simclr"
    views = (2, 2)
    defaults = TrainingDefaults(optimizer="lars", lr=1.0, weight_decay=1e-4, warmup_epochs=10, augmentation="simclr")
    source = "SimCLR paper; official CIFAR-10 command (google-research/simclr README)"
    auto_options = {"hidden_dim": "backbone width"}
    search_space = {"temperature": (0.1, 0.2, 0.5)}

    def __init__(
        self,
        *args: Any,
        temperature: float = 0.5,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_positive("temperature", temperature)
        hidden_dim = self.feature_dim if hidden_dim is None else hidden_dim
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        self.projection_head = SimCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z0, z1 = self.project_views(views, self.projection_head)
        return self.float32_loss(self.criterion, z0, z1)
