"""TCL's relatives that no library ships: the hard-negative (HCL) and debiased contrastive losses.

References:
    - HCL: Robinson, Chuang, Sra, Jegelka, "Contrastive Learning with Hard Negative Samples",
      ICLR 2021; official code github.com/joshr17/HCL (``image/main.py``, ``criterion``).
    - Debiased: Chuang, Robinson, Lin, Torralba, Jegelka, "Debiased Contrastive Learning",
      NeurIPS 2020; official code github.com/chingyaoc/DCL (``main.py``).

For an anchor ``i`` with positives ``P(i)`` (``M = |P(i)|``) and negatives ``N(i)``
(``n = |N(i)|``), L2-normalised embeddings and temperature ``t``, both losses replace the
negatives' sum in NT-Xent's denominator by an estimate ``Ng_i``::

    w_n   = exp(beta s_n / t) / sum_{n' in N(i)} exp(beta s_n' / t)      hardness weights (HCL)
    R_i   = sum_{n in N(i)} w_n exp(s_n / t)                            weighted mean over negatives
    E+_i  = 1/M sum_{p in P(i)} exp(s_p / t)                            mean over positives
    Ng_i  = max( n (R_i - tau+ E+_i) / (1 - tau+),  n exp(-1/t) )
    L_i   = 1/M sum_{p in P(i)} -log( exp(s_p / t) / (exp(s_p / t) + Ng_i) )

and the loss is the mean of ``L_i`` over the anchors that have a positive. ``beta = 0`` (uniform
weights, ``n R_i`` = the plain sum) is the debiased loss; ``tau+ = 0`` too is NT-Xent. The
floor ``n exp(-1/t)`` is the smallest value the true sum can take; the official code applies
it ("constrain (optional)") and so does this module, always: without it the estimate can be
``<= 0`` and the log undefined. With two views (``M = 1``) this is the official criterion
line by line; with ``V`` views (``M = V - 1``) ``E+_i`` is the papers' mean over ``M``
positive samples, and every positive is the numerator once.

Everything is computed in log space (log-sum-exp, ``log1p``/``expm1`` for the debiasing
difference), in float32 (float64 stays), also under autocast, on a dense ``N x N``
similarity matrix (no tiling, unlike :func:`tcl_ssl.loss.tcl_loss`).

Labels: the papers define both losses without labels (the positives are the other views;
``tau+`` estimates how many negatives share the anchor's class). :func:`hcl_loss` and
:func:`debiased_loss` take any group ids (an anchor's positives are the keys of its group),
but the modules :class:`HCLLoss` and :class:`DebiasedLoss` refuse ``labels``: with labels
there is nothing to debias (use ``TCLLoss`` / SupCon), and the authors' code has no label form.
"""

from __future__ import annotations

import math

import torch
from lightly.utils import dist
from torch import Tensor, nn
from torch.nn import functional as F

from tcl_ssl.input_checks import (
    check_embeddings,
    check_flag,
    check_ids,
    check_keys,
    check_number,
    check_same_device,
    stable_normalize,
)
from tcl_ssl.loss import flatten_views

__all__ = [
    "HCLLoss",
    "DebiasedLoss",
    "hcl_loss",
    "debiased_loss",
    "estimator_terms",
    "validate_estimator_hyperparameters",
]


def validate_estimator_hyperparameters(
    temperature: float, tau_plus: float, beta: float = 0.0
) -> tuple[float, float, float]:
    """Check HCL's / the debiased loss's hyper-parameters (Python or numpy numbers).

    Args:
        temperature: softmax temperature ``t``; a finite number > 0.
        tau_plus: class prior ``tau+`` (the share of negatives that are in fact positives);
            a number in ``[0, 1)``.
        beta: hardness ``beta`` of HCL's negative weights; a finite number >= 0.

    Returns:
        ``(temperature, tau_plus, beta)`` as floats.

    Raises:
        ValueError: naming the first value that is not allowed and what is.
    """
    temperature = check_number("temperature", temperature, positive=True)
    tau_plus = check_number("tau_plus", tau_plus, minimum=0)
    if tau_plus >= 1:
        raise ValueError(f"tau_plus must be a number in [0, 1) (the class prior tau+), got {tau_plus!r}")
    return temperature, tau_plus, check_number("beta", beta, minimum=0)


def _masked_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log sum_{mask} exp(x)``; ``-inf`` for rows with no entry (finite gradients)."""
    has = mask.any(dim=1)
    safe = mask | ~has[:, None]  # an empty row uses every entry, then is discarded
    lse = torch.logsumexp(x.masked_fill(~safe, -math.inf), dim=1)
    return torch.where(has, lse, torch.full_like(lse, -math.inf))


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and far below it."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def estimator_terms(
    similarity: Tensor,
    anchor_groups: Tensor,
    key_groups: Tensor,
    self_index: Tensor | None,
    temperature: float,
    tau_plus: float,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Per-anchor losses ``L_i`` of HCL / the debiased loss from a similarity matrix.

    Args:
        similarity: ``(N, M)`` cosine similarities of anchors and keys (differentiable).
        anchor_groups: ``(N,)`` integer group ids of the anchors.
        key_groups: ``(M,)`` integer group ids of the keys (same group: positive).
        self_index: ``(N,)`` column of each anchor's own key (neither positive nor negative),
            ``-1`` for none; ``None`` when no anchor is among the keys.
        temperature: ``t`` (> 0, not checked here).
        tau_plus: ``tau+`` in ``[0, 1)`` (not checked here).
        beta: HCL's hardness (>= 0; 0 is the debiased loss; not checked here).

    Returns:
        ``(losses, has_positive)``: ``(N,)`` ``L_i`` (0 where the anchor has no positive) and
        the ``(N,)`` bool mask of anchors that have one.
    """
    logits = similarity / temperature
    same = anchor_groups[:, None] == key_groups[None, :]
    positive, negative = same.clone(), ~same
    if self_index is not None:
        rows = torch.nonzero(self_index >= 0).squeeze(1)
        positive[rows, self_index[rows]] = False
    num_pos = positive.sum(dim=1)
    num_neg = negative.sum(dim=1).to(logits.dtype)
    has_pos, has_neg = num_pos > 0, num_neg > 0

    # log E+_i: the mean of exp(s_p / t) over the positives.
    log_mean_pos = _masked_logsumexp(logits, positive) - torch.log(num_pos.clamp_min(1).to(logits.dtype))
    # log R_i: the mean of exp(s_n / t) under the weights softmax(beta s_n / t) (uniform at beta = 0).
    if beta == 0.0:
        log_mean_neg = _masked_logsumexp(logits, negative) - torch.log(num_neg.clamp_min(1))
    else:
        log_mean_neg = _masked_logsumexp((1.0 + beta) * logits, negative) - _masked_logsumexp(beta * logits, negative)
    log_n = torch.log(num_neg.clamp_min(1))
    floor = log_n - 1.0 / temperature  # log(n exp(-1/t)), the smallest possible sum
    if tau_plus > 0.0:
        # log(R - tau+ E+) = log R + log(1 - exp(log tau+ + log E+ - log R)), defined where < 0.
        ratio = math.log(tau_plus) + log_mean_pos - log_mean_neg
        valid = ratio < 0
        safe_ratio = torch.where(valid, ratio, torch.full_like(ratio, -1.0))
        debiased = log_n + log_mean_neg + _log1mexp(safe_ratio) - math.log1p(-tau_plus)
        estimate = torch.where(valid, debiased, torch.full_like(debiased, -math.inf))
    else:
        estimate = log_n + log_mean_neg
    log_ng = torch.maximum(estimate, floor)
    log_ng = torch.where(has_neg & has_pos, log_ng, torch.full_like(log_ng, -math.inf))
    # -log(e^a / (e^a + Ng)) = softplus(log Ng - a), for every positive a = s_p / t.
    pair = F.softplus(log_ng[:, None] - logits)
    pair = torch.where(positive & has_neg[:, None], pair, torch.zeros_like(pair))
    losses = pair.sum(dim=1) / num_pos.clamp_min(1).to(logits.dtype)
    return losses, has_pos


def _estimator_loss(
    embeddings: Tensor,
    groups: Tensor,
    temperature: float,
    tau_plus: float,
    beta: float,
    keys: Tensor | None,
    key_groups: Tensor | None,
    self_index: Tensor | None,
    normalize: bool,
    check_finite: bool,
) -> Tensor:
    temperature, tau_plus, beta = validate_estimator_hyperparameters(temperature, tau_plus, beta)
    normalize, check_finite = check_flag("normalize", normalize), check_flag("check_finite", check_finite)
    check_embeddings("embeddings", embeddings, check_finite)
    check_ids("groups", groups, embeddings.shape[0])
    check_same_device(embeddings=embeddings, groups=groups, keys=keys, key_groups=key_groups, self_index=self_index)
    check_keys(embeddings, keys, key_groups, self_index, check_finite)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        anchors = embeddings.to(dtype)
        anchors = stable_normalize(anchors) if normalize else anchors
        if keys is None:
            keys_, key_groups_ = anchors, groups
            self_index = torch.arange(anchors.shape[0], device=anchors.device)
        else:
            keys_ = keys.to(dtype)
            keys_ = stable_normalize(keys_) if normalize else keys_
            assert key_groups is not None  # checked above
            key_groups_ = key_groups
        losses, has_pos = estimator_terms(
            anchors @ keys_.T,
            groups.long(),
            key_groups_.long(),
            None if self_index is None else self_index.long(),
            temperature,
            tau_plus,
            beta,
        )
        weights = has_pos.to(dtype) / has_pos.sum().clamp_min(1).to(dtype)
        return (losses * weights).sum()


def hcl_loss(
    embeddings: Tensor,
    groups: Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    *,
    keys: Tensor | None = None,
    key_groups: Tensor | None = None,
    self_index: Tensor | None = None,
    normalize: bool = True,
    check_finite: bool = True,
) -> Tensor:
    """Hard-negative contrastive loss (HCL) of anchors ``embeddings`` against ``keys``.

    See :mod:`tcl_ssl.relatives` for the formula. Defaults ``t = 0.5, tau+ = 0.1,
    beta = 1.0``: the official code's (joshr17/HCL, ``image/main.py``).

    Args:
        embeddings: ``(N, D)`` anchor embeddings (normalised here unless ``normalize=False``).
        groups: ``(N,)`` integer group ids (image ids: the views of one image are positives).
        temperature: ``t`` (> 0).
        tau_plus: class prior ``tau+`` in ``[0, 1)``; 0 switches the debiasing off.
        beta: hardness (>= 0); negatives are weighted by ``softmax(beta s_n / t)``; 0 is the
            debiased loss.
        keys: ``(M, D)`` contrast set; ``None``: the anchors themselves, each anchor's own
            entry excluded.
        key_groups: ``(M,)`` group ids of ``keys`` (required with ``keys``).
        self_index: ``(N,)`` column of each anchor's own entry in ``keys`` (excluded), ``-1``
            for none. Only with ``keys``.
        normalize: L2-normalise ``embeddings`` and ``keys`` first.
        check_finite: refuse NaN or inf in the inputs (a host-device synchronisation).

    Returns:
        Scalar loss: the mean of ``L_i`` over the anchors with a positive (0 when none has
        one), float32 (float64 for float64 input), also under autocast.

    Raises:
        ValueError: on bad shapes, dtypes, non-finite values or hyper-parameters.

    Example:
        >>> import torch
        >>> from tcl_ssl import hcl_loss
        >>> z = torch.randn(6, 16)                     # two views of three images, stacked
        >>> loss = hcl_loss(z, torch.tensor([0, 1, 2, 0, 1, 2]), temperature=0.5, tau_plus=0.1, beta=1.0)
        >>> loss.shape
        torch.Size([])
    """
    return _estimator_loss(
        embeddings, groups, temperature, tau_plus, beta, keys, key_groups, self_index, normalize, check_finite
    )


def debiased_loss(
    embeddings: Tensor,
    groups: Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    *,
    keys: Tensor | None = None,
    key_groups: Tensor | None = None,
    self_index: Tensor | None = None,
    normalize: bool = True,
    check_finite: bool = True,
) -> Tensor:
    """Debiased contrastive loss of anchors ``embeddings`` against ``keys``: HCL at ``beta = 0``.

    Defaults ``t = 0.5, tau+ = 0.1``: the official code's (chingyaoc/DCL, ``main.py``).
    Arguments, result and errors as :func:`hcl_loss` (without ``beta``).

    Example:
        >>> import torch
        >>> from tcl_ssl import debiased_loss
        >>> z = torch.randn(6, 16)
        >>> float(debiased_loss(z, torch.tensor([0, 1, 2, 0, 1, 2]), tau_plus=0.1)) > 0
        True
    """
    return _estimator_loss(
        embeddings, groups, temperature, tau_plus, 0.0, keys, key_groups, self_index, normalize, check_finite
    )


class _EstimatorLoss(nn.Module):
    """Shared module of :class:`HCLLoss` and :class:`DebiasedLoss`: views in, scalar loss out."""

    loss_name = "loss"

    def __init__(
        self,
        temperature: float,
        tau_plus: float,
        beta: float,
        gather_distributed: bool,
        check_inputs: bool,
    ) -> None:
        super().__init__()
        self.temperature, self.tau_plus, self.beta = validate_estimator_hyperparameters(temperature, tau_plus, beta)
        self.check_inputs = check_flag("check_inputs", check_inputs)
        gather_distributed = check_flag("gather_distributed", gather_distributed)
        if gather_distributed and not torch.distributed.is_available():
            raise ValueError("gather_distributed=True but torch.distributed is not available")
        self.gather_distributed = gather_distributed

    def forward(self, *views: Tensor, labels: Tensor | None = None) -> Tensor:
        """The loss of ``V >= 2`` views ``(B, D)`` of one batch; positives: the other views.

        Raises:
            ValueError: for ``labels`` (the loss is self-supervised), fewer than two views,
                views of different shapes and, with ``check_inputs``, NaN or inf.
        """
        if labels is not None:
            raise ValueError(
                f"{self.loss_name} is self-supervised and takes no labels (the papers define it without "
                "them; tau+ stands in for the unknown labels); use TCLLoss(labels=...) or SupCon with labels"
            )
        if len(views) < 2:
            raise ValueError(f"{self.loss_name} needs at least 2 views, got {len(views)}")
        embeddings, groups = flatten_views(views, None)
        if not (self.gather_distributed and dist.world_size() > 1):
            return _estimator_loss(
                embeddings,
                groups,
                self.temperature,
                self.tau_plus,
                self.beta,
                None,
                None,
                None,
                True,
                self.check_inputs,
            )
        # Local anchors against the global batch. Every anchor has V - 1 positives and every
        # process the same batch size (lightly's gather needs it), so the mean over processes
        # of the local means is the global mean.
        check_embeddings("views", embeddings, self.check_inputs)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            anchors = stable_normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)))
        batch, rank, local = views[0].shape[0], dist.rank(), anchors.shape[0]
        keys = torch.cat(dist.gather(anchors), dim=0)
        key_groups = torch.cat([groups + r * batch for r in range(dist.world_size())])
        self_index = torch.arange(local, device=anchors.device) + rank * local
        return _estimator_loss(
            anchors,
            groups + rank * batch,
            self.temperature,
            self.tau_plus,
            self.beta,
            keys,
            key_groups,
            self_index,
            False,
            False,
        )


class HCLLoss(_EstimatorLoss):
    """Hard-negative contrastive loss (Robinson et al., ICLR 2021), lightly-style.

    ``loss(out0, out1)`` or ``loss(*views)``: ``V >= 2`` projections ``(B, D)`` of one batch
    (L2-normalised inside); an anchor's positives are the other views of its image, its
    negatives every other view in the (global) batch. ``HCLLoss(beta=0, tau_plus=0)`` is
    lightly's ``NTXentLoss``; ``beta=0`` is :class:`DebiasedLoss`. Formula: :mod:`tcl_ssl.relatives`.

    Args:
        temperature: ``t`` (> 0). Default 0.5 (official code).
        tau_plus: class prior ``tau+`` in ``[0, 1)``. Default 0.1 (official code).
        beta: hardness of the negatives' weights ``softmax(beta s_n / t)`` (>= 0). Default 1.0
            (official code's default and its best STL-10 setting).
        gather_distributed: contrast with the views of every process (lightly's
            ``dist.gather``, with gradients); each process must pass the same batch size.
        check_inputs: refuse NaN or inf in the views (waits for the device).

    Raises:
        ValueError: at construction, for a hyper-parameter out of range; when called, for
            ``labels``, fewer than two views, views of different shapes, or non-finite values.

    Example:
        >>> import torch
        >>> from tcl_ssl import HCLLoss
        >>> loss_fn = HCLLoss(temperature=0.5, tau_plus=0.1, beta=1.0)
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
        >>> loss.shape
        torch.Size([])
    """

    loss_name = "HCLLoss"

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        gather_distributed: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(temperature, tau_plus, beta, gather_distributed, check_inputs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}"


class DebiasedLoss(_EstimatorLoss):
    """Debiased contrastive loss (Chuang et al., NeurIPS 2020), lightly-style.

    Called as :class:`HCLLoss`; it is ``HCLLoss(beta=0)``, and ``DebiasedLoss(tau_plus=0)``
    is lightly's ``NTXentLoss``. Formula: :mod:`tcl_ssl.relatives`.

    Args:
        temperature: ``t`` (> 0). Default 0.5 (official code).
        tau_plus: class prior ``tau+`` in ``[0, 1)``. Default 0.1 (official code).
        gather_distributed: contrast with the views of every process (with gradients).
        check_inputs: refuse NaN or inf in the views.

    Raises:
        ValueError: as :class:`HCLLoss`.

    Example:
        >>> import torch
        >>> from tcl_ssl import DebiasedLoss
        >>> loss = DebiasedLoss(tau_plus=0.1)(torch.randn(8, 32), torch.randn(8, 32), torch.randn(8, 32))
        >>> loss.shape
        torch.Size([])
    """

    loss_name = "DebiasedLoss"

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        gather_distributed: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(temperature, tau_plus, 0.0, gather_distributed, check_inputs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}"
