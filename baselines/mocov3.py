"""MoCo v3 (Chen, Xie, He, ICCV 2021): a momentum key encoder, a predictor, in-batch keys, no queue."""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead
from lightly.utils import dist
from torch import Tensor, nn

from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size
from tcl_ssl.methods.momentum import MomentumMethod, momentum_copy


def mocov3_contrastive(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """MoCo v3's ``ctr(q, k)``: cross-entropy of each query against every key of the (global) batch,
    its own image's key the positive, times ``2 t`` (the paper's pseudo-code, algorithm 1).

    Args:
        queries: ``(B, D)`` queries of this process (any norm; normalised here).
        keys: ``(B, D)`` keys of the same images from the other view, without gradient; gathered
            from every process, so that each query meets ``B * world_size`` keys.
        temperature: softmax temperature (> 0).

    Returns:
        The scalar loss, the mean over the ``B`` queries.
    """
    queries = nn.functional.normalize(queries, dim=1)
    keys = nn.functional.normalize(keys, dim=1)
    if dist.world_size() > 1:
        keys = torch.cat(dist.gather(keys.contiguous()))
    logits = queries @ keys.T / temperature
    targets = torch.arange(queries.shape[0], device=queries.device) + dist.rank() * queries.shape[0]
    return 2 * temperature * nn.functional.cross_entropy(logits, targets)


class MoCoV3(MomentumMethod):
    """MoCo v3 on a ResNet with lightly's ``MoCoProjectionHead`` (v3 layout) and ``BYOLPredictionHead``.

    Online (query) network: backbone -> projection -> prediction; key network: momentum copy
    of backbone and projection. Each query's positive is its image's key from the other view,
    its negatives the keys of every other image in the (global) batch; there is no queue. The
    loss is the paper's symmetric ``ctr(q0, k1) + ctr(q1, k0)``, each term a cross-entropy at
    temperature ``t`` scaled by ``2 t`` (:func:`mocov3_contrastive`).

    Heads (ResNet form of the official code and solo-learn): projection of 2 layers,
    ``Linear - BN - ReLU - Linear - BN`` (lightly's ``MoCoProjectionHead`` with
    ``num_layers=2, batch_norm=True``); prediction of 2 layers, ``Linear - BN - ReLU - Linear``.

    Defaults: temperature 0.2; heads 4096 -> 256 (projection and prediction hidden widths
    alike); momentum 0.99 -> 1.0 (cosine by step); LARS lr 0.3 at batch 256, weight decay
    1e-6, 10 warm-up epochs; the ``byol`` augmentation pipeline (solo-learn's
    ``asymmetric.yaml``: crops from 8 %, jitter 0.4/0.4/0.2/0.1, solarization on the second
    view). Source: solo-learn's CIFAR-10 configuration ``scripts/pretrain/cifar/mocov3.yaml``
    and its loss ``solo/losses/mocov3.py``. solo-learn's LARS clips the adapted lr with a trust
    coefficient of 0.02; the project's is lightly's (0.001, no clipping), so the same lr takes
    other steps here: a starting point for tuning, not a tuned value.

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: softmax temperature of the contrastive loss (> 0).
        hidden_dim: hidden width of the projection and prediction heads.
        output_dim: output width of the projection and prediction heads.
        momentum_start: EMA momentum of the key encoder at the first step.
        momentum_end: EMA momentum at the last step (cosine in between).
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "mocov3"
    views = (2, 2)
    compared_in = ("self-supervised",)
    defaults = TrainingDefaults(optimizer="lars", lr=0.3, weight_decay=1e-6, warmup_epochs=10, augmentation="byol")
    source = "solo-learn cifar/mocov3.yaml and solo/losses/mocov3.py; heads, loss: MoCo v3 paper"
    search_space = {"temperature": (0.1, 0.2, 0.5), "momentum_start": (0.9, 0.99)}

    def __init__(
        self,
        *args: Any,
        temperature: float = 0.2,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, momentum_start=momentum_start, momentum_end=momentum_end, **kwargs)
        check_positive("temperature", temperature)
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        self.temperature = temperature
        self.projection_head = MoCoProjectionHead(self.feature_dim, hidden_dim, output_dim, batch_norm=True)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z0, z1 = self.project_views(views, self.projection_head)
        q0, q1 = self.prediction_head(torch.cat([z0, z1])).chunk(2)
        with torch.no_grad():
            k0, k1 = self.project_views(views, self.projection_head_momentum, self.backbone_momentum)
        loss = self.float32_loss(mocov3_contrastive, q0, k1, temperature=self.temperature)
        return loss + self.float32_loss(mocov3_contrastive, q1, k0, temperature=self.temperature)
