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
    """``linear((x - mean) / std)``: a linear classifier on standardised features ``(B, F)`` -> logits ``(B, C)``.

    Starts as the zero classifier; :func:`fit_linear_probe` fits it.

    Args:
        mean: ``(F,)`` per-feature mean subtracted first (copied into a buffer).
        std: ``(F,)`` per-feature scale divided by next (copied into a buffer).
        num_classes: the number of classes ``C``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.linear = nn.Linear(mean.shape[0], num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @classmethod
    def for_features(cls, features: Tensor, num_classes: int) -> StandardisedLinear:
        """A zero classifier whose standardisation comes from ``features`` ``(N, F)`` (constant
        features are left unscaled)."""
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
    """Fit a :class:`StandardisedLinear` with full-batch L-BFGS (strong Wolfe line search), on
    the features' device.

    The objective is the mean cross-entropy plus ``weight_decay / 2 * ||W||^2`` (the bias is not
    decayed). The fit stops when no partial derivative of the objective exceeds
    ``tolerance_grad`` in absolute value (scikit-learn's stopping rule for lbfgs), or after
    ``max_iter`` iterations.

    Args:
        features: ``(N, F)`` float features (standardised inside).
        labels: ``(N,)`` int64 labels in ``[0, num_classes)``.
        num_classes: the number of classes.
        weight_decay: the L2 penalty on the weights (>= 0).
        max_iter: the most L-BFGS iterations.
        tolerance_grad: the stopping threshold on the gradient (> 0).
        init: warm-start from this probe's weights (it must have the same standardisation).

    Returns:
        The fitted probe, on the features' device, with ``requires_grad`` off.

    Raises:
        ValueError: for a negative ``weight_decay``, a ``tolerance_grad`` <= 0, or labels that
            are not ``(N,)``.

    Example:
        >>> import torch
        >>> from tcl_ssl.evaluation import fit_linear_probe
        >>> features = torch.cat([torch.randn(20, 4) - 2, torch.randn(20, 4) + 2])
        >>> labels = torch.arange(40) // 20
        >>> probe = fit_linear_probe(features, labels, num_classes=2, weight_decay=1e-4)
        >>> bool((probe(features).argmax(dim=1) == labels).all())
        True
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
    """The ``top`` highest-scoring classes of each row of ``features`` ``(N, F)``, best first:
    int64 ``(N, min(top, C))``, on the probe's device."""
    logits = probe(features.to(next(probe.parameters()).device))
    return logits.topk(min(top, logits.shape[1]), dim=1).indices


@dataclass
class LinearProbeResult:
    """What :func:`select_linear_probe` chose.

    Attributes:
        probe: the probe with the best validation top-1.
        weight_decay: its weight decay.
        val_top1: validation top-1 (percent) of the probe of each weight decay tried.
    """

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
    """Fit a probe for each weight decay and keep the one with the best top-1 on ``val``.

    The probes are fitted largest weight decay first, each warm-started from the previous; ties
    go to the larger weight decay.

    Args:
        train: ``(features (N, F), labels (N,))`` to fit on.
        val: ``(features (M, F), labels (M,))`` to choose on.
        num_classes: the number of classes.
        weight_decays: the weight decays to try.
        device: where to fit (default: where the train features are).

    Returns:
        The chosen probe, its weight decay and every validation top-1.

    Raises:
        ValueError: when ``weight_decays`` is empty.
    """
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
