"""NNCLR (Dwibedi et al., ICCV 2021): each view's positive is the nearest neighbour of its
projection in a support set of past projections."""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import NNCLRPredictionHead, NNCLRProjectionHead, NNMemoryBankModule
from torch import Tensor

from tcl_ssl.methods import Method
from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size


class NNCLR(Method):
    """NNCLR with lightly's ``NNCLRProjectionHead``, ``NNCLRPredictionHead``, ``NNMemoryBankModule``
    (the support set) and ``NTXentLoss`` (gathered across processes).

    Online network: backbone -> projection ``z`` -> prediction ``p``. Each view's projection is
    replaced by its nearest neighbour (largest cosine similarity) in the support set as it was
    before this step, ``nn(z)``, without gradient; the loss is the symmetric NT-Xent
    ``(L(nn(z0), p1) + L(nn(z1), p0)) / 2`` (lightly's form). After the step the second view's
    projections ``z1`` (gathered from every process, so that the support set does not depend
    on the number of processes, as in solo-learn) enter the support set, a FIFO queue of
    ``queue_size`` projections that starts as random unit vectors (lightly's initialisation)
    and that is in the checkpoint. The support set is updated only when the loss carries a
    gradient (as lightly's ``NTXentLoss`` updates its memory bank), so a loss evaluated under
    ``torch.no_grad()`` leaves it as it is.

    Defaults: temperature 0.2; a support set of 65,536 projections; projection head 2048 ->
    256 (3 layers), prediction head 4096 -> 256; LARS lr 0.4 at batch 256, weight decay 1e-5,
    10 warm-up epochs; the ``byol`` augmentation pipeline (solo-learn's ``asymmetric.yaml``).
    Source: solo-learn's CIFAR-10 configuration ``scripts/pretrain/cifar/nnclr.yaml``; heads: the
    paper. solo-learn's LARS clips the adapted lr with a trust coefficient of 0.02; the project's
    is lightly's (0.001, no clipping), so the same lr takes other steps here: a starting point
    for tuning, not a tuned value.

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: NT-Xent's temperature (> 0).
        queue_size: projections in the support set.
        hidden_dim: hidden width of the projection head.
        prediction_hidden_dim: hidden width of the prediction head.
        output_dim: output width of both heads (and of the support set's entries).
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "nnclr"
    views = (2, 2)
    compared_in = ("self-supervised",)
    defaults = TrainingDefaults(optimizer="lars", lr=0.4, weight_decay=1e-5, warmup_epochs=10, augmentation="byol")
    source = "solo-learn cifar/nnclr.yaml; heads: NNCLR paper"
    search_space = {"temperature": (0.1, 0.2, 0.5), "queue_size": (4096, 16384, 65536)}

    def __init__(
        self,
        *args: Any,
        temperature: float = 0.2,
        queue_size: int = 65536,
        hidden_dim: int = 2048,
        prediction_hidden_dim: int = 4096,
        output_dim: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_positive("temperature", temperature)
        for name, value in (
            ("queue_size", queue_size),
            ("hidden_dim", hidden_dim),
            ("prediction_hidden_dim", prediction_hidden_dim),
            ("output_dim", output_dim),
        ):
            check_size(name, value)
        self.projection_head = NNCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction_head = NNCLRPredictionHead(output_dim, prediction_hidden_dim, output_dim)
        self.support_set = NNMemoryBankModule(size=(queue_size, output_dim))
        self.support_set.gather_distributed = True  # every process adds the global batch (solo-learn)
        for name in ("bank", "bank_ptr"):  # lightly (1.6) registers them with persistent=False
            self.support_set.register_buffer(name, getattr(self.support_set, name), persistent=True)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z0, z1 = self.project_views(views, self.projection_head)
        p0, p1 = self.prediction_head(torch.cat([z0, z1])).chunk(2)
        update = z1.requires_grad  # not under torch.no_grad()
        # in float32, as the bank, whatever the autocast; z1 is looked up before it is added
        with torch.autocast(device_type=z0.device.type, enabled=False):
            nn0 = self.support_set(z0.detach().float(), update=False)
            nn1 = self.support_set(z1.detach().float(), update=update)
        loss = self.float32_loss(self.criterion, nn0, p1) + self.float32_loss(self.criterion, nn1, p0)
        return loss / 2
