"""Fast linear probe: multinomial logistic regression on cached, standardised features.

The features are computed once without augmentation; the classifier is fitted full-batch with
L-BFGS on the device, for each weight decay of a small grid, and the weight decay with the best
validation top-1 is kept. The objective is the mean cross-entropy plus
``weight_decay / 2 * ||W||^2`` (the bias is not decayed), i.e. scikit-learn's
``LogisticRegression(C=1 / (weight_decay * N))`` on the same standardised features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tcl_ssl.evaluation.knn import topk_accuracy

#: weight decays tried by :func:`select_linear_probe`
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


class StandardisedLinear(nn.Module):
    """``linear((x - mean) / std)``: a linear classifier on standardised features ``(B, F)`` -> logits ``(B, C)``."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.linear = nn.Linear(mean.shape[0], num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @classmethod
    def for_features(cls, features: Tensor, num_classes: int) -> StandardisedLinear:
        """A zero classifier whose standardisation comes from ``features`` (constant features are left unscaled)."""
        mean = features.mean(dim=0)
        std = features.std(dim=0)
        return cls(mean, torch.where(std > 1e-6, std, torch.ones_like(std)), num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)


def fit_linear_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    *,
    max_iter: int = 1000,
    tolerance_grad: float = 1e-4,
    init: StandardisedLinear | None = None,
) -> StandardisedLinear:
    """Fit a :class:`StandardisedLinear` on ``features`` ``(N, F)`` and int64 ``labels`` ``(N,)``
    with full-batch L-BFGS (strong Wolfe line search), on the features' device.

    The fit stops when no partial derivative of the objective exceeds ``tolerance_grad`` in
    absolute value: scikit-learn's stopping rule for lbfgs, whose default ``tol`` is also 1e-4.
    ``init`` warm-starts from another probe's weights (same standardisation).
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not tolerance_grad > 0:
        raise ValueError(f"tolerance_grad must be > 0, got {tolerance_grad!r}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    probe = StandardisedLinear.for_features(features, num_classes).to(features.device)
    if init is not None:
        probe.linear.load_state_dict(init.linear.state_dict())
    labels = labels.to(features.device)
    x = (features - probe.mean) / probe.std
    optimizer = torch.optim.LBFGS(
        probe.linear.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tolerance_grad,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe.linear(x), labels) + 0.5 * weight_decay * probe.linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return probe.requires_grad_(False)


@torch.no_grad()
def probe_predictions(probe: nn.Module, features: Tensor, top: int = 5) -> Tensor:
    """The ``top`` highest-scoring classes of each row, best first: int64 ``(N, top)``."""
    logits = probe(features.to(next(probe.parameters()).device))
    return logits.topk(min(top, logits.shape[1]), dim=1).indices


@dataclass
class LinearProbeResult:
    """The chosen probe, its weight decay, and validation top-1 (percent) for each weight decay tried."""

    probe: StandardisedLinear
    weight_decay: float
    val_top1: dict[float, float]


def select_linear_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    num_classes: int,
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
    device: torch.device | str | None = None,
) -> LinearProbeResult:
    """Fit a probe on ``train`` = ``(features, labels)`` for each weight decay (largest first, each
    warm-started from the previous) and keep the one with the best top-1 on ``val`` (ties: the
    larger weight decay)."""
    if not weight_decays:
        raise ValueError("weight_decays must not be empty")
    device = train[0].device if device is None else torch.device(device)
    x, y = train[0].to(device), train[1].to(device)
    best: tuple[float, float, StandardisedLinear] | None = None
    scores: dict[float, float] = {}
    previous = None
    for weight_decay in sorted(weight_decays, reverse=True):
        probe = fit_linear_probe(x, y, num_classes, weight_decay, init=previous)
        previous = probe
        scores[weight_decay] = topk_accuracy(probe_predictions(probe, val[0], top=1), val[1], ks=(1,))["top1"]
        if best is None or scores[weight_decay] > best[0]:
            best = (scores[weight_decay], weight_decay, probe)
    assert best is not None
    return LinearProbeResult(best[2], best[1], scores)
