"""Debiased contrastive learning (Chuang et al., NeurIPS 2020): SimCLR whose negatives' sum is
corrected for the same-class samples among them."""

from __future__ import annotations

from typing import Any

from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor

from tcl_ssl.methods import Method
from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size
from tcl_ssl.relatives import DebiasedLoss, HCLLoss


class Debiased(Method):
    """Debiased contrastive learning: lightly's ``SimCLRProjectionHead`` and :class:`~tcl_ssl.relatives.DebiasedLoss`.

    Each view's positives are the other views of its image; the sum over its negatives is
    replaced by the debiased estimate with class prior ``tau+`` (``hcl`` at ``beta = 0``).
    Self-supervised only: the loss is defined without labels.

    Defaults: temperature 0.5, ``tau+`` 0.1 and a head 512 -> 128 (BatchNorm, ReLU): the
    official code's (chingyaoc/DCL ``main.py`` and ``model.py``; Adam lr 1e-3, weight decay
    1e-6, batch 256; HCL's code, by the same authors, runs it on CIFAR-10 as ``beta = 0``).
    The trainer offers SGD and LARS, not Adam, so the optimiser, learning rate, weight decay,
    warm-up and the ``simclr`` augmentation are SimCLR's (``simclr``'s defaults).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: ``t`` (> 0).
        tau_plus: class prior ``tau+`` in ``[0, 1)`` (0 is SimCLR's NT-Xent).
        hidden_dim: hidden width of the head.
        output_dim: output width of the head.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "debiased"
    defaults = TrainingDefaults(optimizer="lars", lr=1.0, weight_decay=1e-4, warmup_epochs=10, augmentation="simclr")
    source = "Debiased official code (chingyaoc/DCL main.py: t, tau+, head); optimiser, augmentation: simclr's"
    search_space = {"tau_plus": (0.05, 0.1, 0.2), "temperature": (0.2, 0.5)}

    def __init__(
        self,
        *args: Any,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        hidden_dim: int = 512,
        output_dim: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_positive("temperature", temperature)
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        self.projection_head = SimCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.criterion: DebiasedLoss | HCLLoss = DebiasedLoss(temperature, tau_plus, gather_distributed=True)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        return self.float32_loss(self.criterion, *self.project_views(views, self.projection_head))
