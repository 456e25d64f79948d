"""Supervised cross-entropy: the backbone and a linear classifier trained on augmented images."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from tcl_ssl.methods import Method
from tcl_ssl.methods.base import TrainingDefaults


class CrossEntropy(Method):
    """A linear classifier on the backbone's features, trained with cross-entropy on every view.

    Supervised only. Defaults: one view per image with the ``crop-flip`` augmentation pipeline
    (random resized crop 0.2-1 and flip), SGD lr 0.2 at batch 256, weight decay 1e-4, cosine
    with 10 warm-up epochs. Source: the official SupCon code's cross-entropy baseline
    (HobbitLong/SupContrast, ``main_ce.py`` and the README's command).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "ce"
    without_labels = False
    with_labels = True
    views = (1, None)
    defaults = TrainingDefaults(
        optimizer="sgd", lr=0.2, weight_decay=1e-4, warmup_epochs=10, augmentation="crop-flip", num_views=1
    )
    source = "SupCon official code (HobbitLong/SupContrast) main_ce.py and README"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.classifier = nn.Linear(self.feature_dim, self.num_classes)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        assert labels is not None
        logits = self.classifier(self.embed_views(views))
        return self.float32_loss(F.cross_entropy, logits, target=labels.repeat(len(views)))
