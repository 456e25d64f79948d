"""Decoupled contrastive learning (Yeh et al., ECCV 2022): NT-Xent without the positive in the
denominator (DCL), and with a von Mises-Fisher weight on the positive term (DCLW)."""

from __future__ import annotations

import warnings
from typing import Any

from lightly.loss import DCLLoss, DCLWLoss
from torch import Tensor, nn

from baselines.simclr import SimCLR
from tcl_ssl.methods.base import TrainingDefaults, check_positive


class DCL(SimCLR):
    """DCL: :class:`~baselines.simclr.SimCLR` with lightly's ``DCLLoss`` (gathered across processes).

    Two views of each image. For a view ``i`` with positive ``p`` (the other view of its image)
    and negatives ``n`` (both views of every other image of the global batch), the loss is
    ``-s_ip / t + log sum_n exp(s_in / t)`` on cosine similarities ``s``: NT-Xent with the
    positive taken out of the denominator. Mean over both views of every image.
    Self-supervised only.

    Defaults: temperature 0.1; LARS lr 1.2 at batch 256 (lightly's ``0.075 * sqrt(batch)``),
    weight decay 1e-6, 10 warm-up epochs; SimCLR's head (2 layers, hidden width = backbone
    width, output 128, lightly's BatchNorm layout) and the ``simclr`` augmentation pipeline.
    Source: lightly's ImageNet ResNet-50 benchmark ``benchmarks/imagenet/resnet50/dcl.py``,
    which follows the paper's use of SimCLR's setup (the project scales lr linearly with the
    batch, lightly by its square root: the two agree at batch 256).

    Args:
        *args: :class:`~baselines.simclr.SimCLR`'s arguments.
        temperature: the loss's temperature (> 0).
        **kwargs: :class:`~baselines.simclr.SimCLR`'s keyword arguments (``hidden_dim``,
            ``output_dim``, and :class:`~tcl_ssl.methods.Method`'s).
    """

    name = "dcl"
    views = (2, 2)
    compared_in = ("self-supervised",)
    defaults = TrainingDefaults(optimizer="lars", lr=1.2, weight_decay=1e-6, warmup_epochs=10, augmentation="simclr")
    source = "lightly ImageNet benchmark (resnet50/dcl.py); head, augmentation: SimCLR, as the DCL paper"
    auto_options = {"hidden_dim": "backbone width"}
    search_space = {"temperature": (0.1, 0.2, 0.5)}

    def __init__(self, *args: Any, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, temperature=temperature, **kwargs)
        self.temperature = temperature
        self.criterion: nn.Module = DCLLoss(temperature=temperature, gather_distributed=True)


class DCLW(DCL):
    """DCLW: :class:`DCL` with lightly's ``DCLWLoss``, whose positive term of image ``i`` is weighted
    by the negative von Mises-Fisher weight ``w_i = 2 - N softmax_i(s_i0,i1 / sigma)`` over the
    ``N`` images of the process's batch (without gradient through the weight).

    Defaults: as :class:`DCL`, and ``sigma`` 0.5. Source: the paper; lightly's ImageNet
    ResNet-50 benchmark ``benchmarks/imagenet/resnet50/dclw.py``.

    Args:
        *args: :class:`DCL`'s arguments.
        sigma: the weight's temperature (> 0).
        **kwargs: :class:`DCL`'s keyword arguments.
    """

    name = "dclw"
    source = "lightly ImageNet benchmark (resnet50/dclw.py); sigma: DCL paper; head, augmentation: SimCLR"
    search_space = {"temperature": (0.1, 0.2, 0.5), "sigma": (0.25, 0.5, 1.0)}

    def __init__(self, *args: Any, sigma: float = 0.5, **kwargs: Any) -> None:
        check_positive("sigma", sigma)
        super().__init__(*args, **kwargs)
        self.sigma = sigma
        self.criterion = DCLWLoss(temperature=self.temperature, sigma=sigma, gather_distributed=True)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        with warnings.catch_warnings():  # lightly 1.6 builds the weights with torch.tensor(tensor)
            warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
            return super().training_loss(views, labels)
