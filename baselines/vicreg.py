"""VICReg (Bardes, Ponce & LeCun, ICLR 2022): variance, invariance and covariance regularisation."""

from __future__ import annotations

from typing import Any

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor

from tcl_ssl.methods.base import Method, TrainingDefaults, check_positive, check_size


class VICReg(Method):
    """VICReg with lightly's ``VICRegProjectionHead`` and ``VICRegLoss``.

    Both views go through the backbone and a 3-layer expander; the loss of the two expansions
    ``(B, output_dim)`` is ``lambda_param * s + mu_param * v + nu_param * c``: the mean squared
    distance between the views (invariance), the hinge ``relu(1 - std)`` of each dimension's
    standard deviation over the batch, averaged over dimensions and both views (variance), and the
    squared off-diagonal covariances divided by ``output_dim``, summed over both views
    (covariance), as in the official code (facebookresearch/vicreg). No labels, no targets.

    Defaults: expander 2048 -> 2048 -> 2048 and weights 25 / 25 / 1 from solo-learn's CIFAR-10
    configuration ``scripts/pretrain/cifar/vicreg.yaml`` (its ``sim_loss_weight``,
    ``var_loss_weight``, ``cov_loss_weight``); LARS lr 0.2 at batch 256, weight decay 1e-6, 10
    warm-up epochs from the paper (as lightly's ImageNet benchmark): solo-learn's lr 0.3 and
    weight decay 1e-4 belong to its own LARS (trust coefficient 0.02, clipped), about 20x the
    steps of lightly's (0.001, the papers'). Augmentation: the ``byol`` pipeline, which the
    VICReg paper follows (solo-learn's CIFAR file instead crops from 20 % of the area and
    solarizes both views with p 0.1: ``--pipeline-option min_scale=0.2`` gives the first).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        lambda_param: weight of the invariance term (> 0).
        mu_param: weight of the variance term (> 0).
        nu_param: weight of the covariance term (> 0).
        hidden_dim: hidden width of the expander.
        output_dim: output width of the expander.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "vicreg"
    views = (2, 2)
    compared_in = ("self-supervised",)
    defaults = TrainingDefaults(optimizer="lars", lr=0.2, weight_decay=1e-6, warmup_epochs=10, augmentation="byol")
    source = "head, loss weights: solo-learn cifar/vicreg.yaml; optimiser: paper (as lightly's benchmark); augmentation: BYOL's, as the paper"
    search_space = {"lambda_param": (10.0, 25.0, 50.0), "nu_param": (0.5, 1.0)}

    def __init__(
        self,
        *args: Any,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        hidden_dim: int = 2048,
        output_dim: int = 2048,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("lambda_param", lambda_param), ("mu_param", mu_param), ("nu_param", nu_param)):
            check_positive(name, value)
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        self.projection_head = VICRegProjectionHead(self.feature_dim, hidden_dim, output_dim, num_layers=3)
        self.criterion = VICRegLoss(
            lambda_param=lambda_param, mu_param=mu_param, nu_param=nu_param, gather_distributed=True
        )

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        z0, z1 = self.project_views(views, self.projection_head)
        return self.float32_loss(self.criterion, z0, z1)
