"""Gradient analysis of TCL: how hard the loss pulls each positive and pushes each negative.

For anchor ``i`` and key ``j`` with similarity ``S_ij = z_i . z_j`` (normalised embeddings),
the closed-form gradient of the anchor's loss ``L_i`` (see :mod:`tcl_ssl.loss`) is::

    positive p:  dL_i/dS_ip = (exp(S_ip / t) / t - k1 exp(-S_ip)) / D_i - 1 / (|P(i)| t)
    negative n:  dL_i/dS_in = k2 exp(S_in / t) / (t D_i)

A gradient step changes ``S_ij`` by ``-lr * dL_i/dS_ij``, so the *pull* on a positive is
``-dL_i/dS_ip`` (negative when that positive already dominates the other positives: it is
then pushed back towards them) and the *push* on a negative is ``dL_i/dS_in`` (always > 0).
``k1`` adds ``k1 exp(-S_ip) / D_i`` to the pull, which grows as the positive gets harder
(lower ``S_ip``), and enlarges ``D_i``, which shrinks every other term; ``k2`` multiplies the
push of every negative (by less than ``k2`` where the negatives dominate ``D_i``).

:func:`gradient_coefficients` returns these coefficients for a batch (from the library's
closed form, :func:`tcl_ssl.loss.tcl_terms`); :func:`sweep_pair_coefficient` evaluates them
in a controlled setting and :func:`plot_gradients` draws them (``tcl-ssl gradients``).

TCL's relatives, on one anchor with one positive (two views) and ``n`` negatives
(:func:`relative_row_losses`, :func:`relative_pair_coefficient`, the figure's third column):
NT-Xent (TCL at ``k1 = 0, k2 = 1``); DCL, the decoupled loss ``-s_p/t + log sum_n exp(s_n/t)``
(lightly's ``DCLLoss``; the limit of TCL at ``k1 = 0``, ``k2 -> inf``, minus ``log k2``), whose
pull is a constant ``1/t``; DCLW, DCL with the positive term weighted by lightly's
``negative_mises_fisher_weights`` ``w = 2 - B softmax_b(s_bb' / sigma)`` (detached);
HCL and the debiased loss (:mod:`tcl_ssl.relatives`), whose estimate ``Ng_i`` reweights the
negatives by ``exp(beta s_n / t)`` and subtracts ``tau+`` times the positive term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from tcl_ssl.input_checks import check_number
from tcl_ssl.loss import tcl_terms, validate_hyperparameters
from tcl_ssl.relatives import estimator_terms, validate_estimator_hyperparameters
from tcl_ssl.safe_io import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: the two kinds of pair a sweep varies
PairKind = Literal["positive", "negative"]
PAIR_KINDS: tuple[PairKind, PairKind] = ("positive", "negative")

__all__ = [
    "GradientCoefficients",
    "SweepSetting",
    "similarity_gradient",
    "gradient_coefficients",
    "sweep_pair_coefficient",
    "RELATIVES",
    "RelativesSetting",
    "relative_row_losses",
    "relative_pair_coefficient",
    "plot_gradients",
]


@dataclass
class GradientCoefficients:
    """Closed-form ``dL_i/dS_ij`` of every anchor ``i`` with respect to every key ``j``.

    Attributes:
        coefficients: ``(N, M)`` ``dL_i/dS_ij``, per anchor (not weighted by the mean over
            anchors); 0 on the anchor's own key and on the rows of anchors without a
            positive (they have no loss).
        positive_mask: ``(N, M)`` bool, ``j`` is a positive of ``i``.
        negative_mask: ``(N, M)`` bool, ``j`` is a negative of ``i``.
    """

    coefficients: Tensor
    positive_mask: Tensor
    negative_mask: Tensor

    @property
    def pull(self) -> Tensor:
        """``(N, M)`` pull ``-dL_i/dS_ip`` on positives (> 0 draws ``p`` closer), 0 elsewhere."""
        return torch.where(self.positive_mask, -self.coefficients, torch.zeros_like(self.coefficients))

    @property
    def push(self) -> Tensor:
        """``(N, M)`` push ``dL_i/dS_in`` (> 0) on negatives, 0 elsewhere."""
        return torch.where(self.negative_mask, self.coefficients, torch.zeros_like(self.coefficients))


def similarity_gradient(
    similarity: Tensor,
    anchor_groups: Tensor,
    key_groups: Tensor,
    temperature: float = 0.1,
    k1: float = 5000.0,
    k2: float = 1.0,
    self_index: Tensor | None = None,
) -> GradientCoefficients:
    """Per-anchor gradient coefficients from a similarity matrix.

    Args:
        similarity: ``(N, M)`` cosine similarities ``S_ij`` in ``[-1, 1]`` between anchors
            and keys (float32 or float64; not modified).
        anchor_groups: ``(N,)`` integer group ids of the anchors.
        key_groups: ``(M,)`` integer group ids of the keys; a key with an anchor's group id
            is one of its positives, every other key a negative.
        temperature: softmax temperature ``t`` (> 0).
        k1: weight of the hard-positive term (>= 0).
        k2: weight of the negatives (> 0).
        self_index: ``(N,)`` column of each anchor's own key (neither positive nor negative),
            ``-1`` for none; ``None`` when no anchor is among the keys.

    Returns:
        ``(N, M)`` coefficients ``dL_i/dS_ij`` (in the dtype of ``similarity``) with the
        positive and negative masks; see :class:`GradientCoefficients`.

    Raises:
        ValueError: for hyper-parameters out of range, or a ``similarity`` whose shape does
            not match the groups.
    """
    validate_hyperparameters(temperature, k1, k2)
    if similarity.ndim != 2 or similarity.shape != (anchor_groups.numel(), key_groups.numel()):
        raise ValueError(
            f"similarity must have shape ({anchor_groups.numel()}, {key_groups.numel()}) "
            f"to match the groups, got {tuple(similarity.shape)}"
        )
    anchor_groups, key_groups = anchor_groups.long(), key_groups.long()
    self_index = None if self_index is None else self_index.long()
    terms = tcl_terms(
        similarity.detach().clone(),
        anchor_groups,
        key_groups,
        self_index,
        float(temperature),
        float(k1),
        float(k2),
        True,
    )
    assert terms.grad_similarity is not None
    same = anchor_groups[:, None] == key_groups[None, :]
    is_self = torch.zeros_like(same)
    if self_index is not None:
        rows = torch.nonzero(self_index >= 0).squeeze(1)
        is_self[rows, self_index[rows]] = True
    return GradientCoefficients(terms.grad_similarity, same & ~is_self, ~same)


def gradient_coefficients(
    embeddings: Tensor,
    groups: Tensor,
    temperature: float = 0.1,
    k1: float = 5000.0,
    k2: float = 1.0,
) -> GradientCoefficients:
    """Gradient coefficients of a batch: anchors and keys are all ``N`` embeddings.

    Args:
        embeddings: ``(N, D)`` embeddings (L2-normalised here; not modified).
        groups: ``(N,)`` integer group ids (labels, or image ids for self-supervised views).
        temperature: softmax temperature ``t`` (> 0).
        k1: weight of the hard-positive term (>= 0).
        k2: weight of the negatives (> 0).

    Returns:
        ``(N, N)`` coefficients ``dL_i/dS_ij`` with masks; see :class:`GradientCoefficients`.

    Raises:
        ValueError: for embeddings that are not ``(N, D)``, groups that are not ``(N,)``, or
            hyper-parameters out of range.

    Example:
        >>> import torch
        >>> from tcl_ssl.gradients import gradient_coefficients
        >>> z = torch.randn(6, 8)
        >>> result = gradient_coefficients(z, torch.tensor([0, 1, 2, 0, 1, 2]), k1=0.0)
        >>> bool((result.push >= 0).all()), result.pull.shape
        (True, torch.Size([6, 6]))
    """
    if embeddings.ndim != 2 or groups.shape != (embeddings.shape[0],):
        raise ValueError(
            f"embeddings must be (N, D) and groups (N,), got {tuple(embeddings.shape)} and {tuple(groups.shape)}"
        )
    z = F.normalize(embeddings.detach().to(torch.promote_types(embeddings.dtype, torch.float32)), dim=1)
    index = torch.arange(z.shape[0], device=z.device)
    return similarity_gradient(z @ z.T, groups, groups, temperature, k1, k2, self_index=index)


@dataclass(frozen=True)
class SweepSetting:
    """A controlled anchor: fixed similarities to all keys but one, which is swept.

    Attributes:
        num_positives: positives of the anchor, the swept one included.
        num_negatives: negatives of the anchor, the swept one included.
        positive_similarity: cosine similarity of the other positives to the anchor.
        negative_similarity: cosine similarity of the other negatives to the anchor.
        temperature: TCL's ``t``.
    """

    num_positives: int = 4
    num_negatives: int = 252
    positive_similarity: float = 0.5
    negative_similarity: float = 0.0
    temperature: float = 0.1

    def describe(self) -> str:
        """The setting in one line of words (for figure captions)."""
        return (
            f"one anchor, {self.num_positives} positives + {self.num_negatives} negatives, "
            f"t = {self.temperature:g}; the others fixed at cos {self.positive_similarity:g} "
            f"(positives) and {self.negative_similarity:g} (negatives)"
        )


def sweep_pair_coefficient(
    similarities: Tensor,
    kind: PairKind,
    k1: float,
    k2: float,
    setting: SweepSetting = SweepSetting(),
) -> Tensor:
    """``dL/dS`` on one swept pair of the controlled anchor, for each swept similarity.

    Args:
        similarities: ``(K,)`` cosine similarities of the swept positive (``kind="positive"``)
            or negative (``kind="negative"``) to the anchor.
        kind: which pair is swept, ``"positive"`` or ``"negative"``.
        k1: weight of the hard-positive term (>= 0; ``k1=0, k2=1`` is SupCon).
        k2: weight of the negatives (> 0).
        setting: the fixed rest of the anchor's keys.

    Returns:
        ``(K,)`` ``dL_i/dS`` of the swept pair (pull = minus this for a positive, push = this
        for a negative), in the dtype of ``similarities``.

    Raises:
        ValueError: for an unknown ``kind``, a setting without a positive or a negative, or
            hyper-parameters out of range.
    """
    if kind not in ("positive", "negative"):
        raise ValueError(f"kind must be 'positive' or 'negative', got {kind!r}")
    if setting.num_positives < 1 or setting.num_negatives < 1:
        raise ValueError(f"the setting needs at least one positive and one negative, got {setting}")
    count = similarities.numel()
    device = similarities.device
    num_keys = setting.num_positives + setting.num_negatives
    key_groups = (torch.arange(num_keys, device=device) >= setting.num_positives).long()  # 0: positive
    similarity = torch.full(
        (count, key_groups.numel()), setting.negative_similarity, dtype=similarities.dtype, device=device
    )
    similarity[:, : setting.num_positives] = setting.positive_similarity
    column = 0 if kind == "positive" else setting.num_positives
    similarity[:, column] = similarities
    result = similarity_gradient(
        similarity,
        torch.zeros(count, dtype=torch.long, device=device),
        key_groups,
        setting.temperature,
        k1,
        k2,
    )
    return result.coefficients[:, column]


#: the losses of the relatives column, in drawing order
RELATIVES: tuple[str, ...] = ("ntxent", "tcl", "dcl", "dclw", "hcl", "debiased")


@dataclass(frozen=True)
class RelativesSetting:
    """The controlled anchor of the relatives column, and each relative's hyper-parameters.

    One anchor of a two-view batch of ``B`` images: one positive (swept, or fixed at
    ``positive_similarity``) and ``num_negatives = 2B - 2`` negatives (one swept, the others at
    ``negative_similarity``). DCLW's weight also sees the ``B - 1`` other images' positive
    pairs, fixed at ``positive_similarity``.

    Attributes:
        num_negatives: negatives of the anchor (``2B - 2``; 254 is a batch of 128).
        positive_similarity: cosine similarity of the positive when a negative is swept, and
            of the other images' positive pairs (DCLW).
        negative_similarity: cosine similarity of the other negatives.
        temperature: ``t`` of every loss (0.5: the HCL and debiased official code's, SimCLR's).
        k1: TCL's ``k1`` (paper default 5000).
        k2: TCL's ``k2``.
        tau_plus: ``tau+`` of HCL and the debiased loss (official default 0.1).
        beta: HCL's ``beta`` (official default 1.0).
        sigma: DCLW's ``sigma`` (lightly's default 0.5).
    """

    num_negatives: int = 254
    positive_similarity: float = 0.5
    negative_similarity: float = 0.0
    temperature: float = 0.5
    k1: float = 5000.0
    k2: float = 1.0
    tau_plus: float = 0.1
    beta: float = 1.0
    sigma: float = 0.5

    @property
    def batch_size(self) -> int:
        """``B``, the images of the two-view batch the anchor belongs to."""
        return self.num_negatives // 2 + 1

    def label(self, loss: str) -> str:
        """The legend entry of ``loss`` (one of :data:`RELATIVES`)."""
        return {
            "ntxent": "NT-Xent / SupCon (TCL k1=0, k2=1)",
            "tcl": f"TCL k1={self.k1:g}, k2={self.k2:g}",
            "dcl": "DCL (TCL k1=0, k2->inf, - log k2)",
            "dclw": f"DCLW (sigma={self.sigma:g})",
            "hcl": f"HCL (beta={self.beta:g}, tau+={self.tau_plus:g})",
            "debiased": f"debiased (tau+={self.tau_plus:g})",
        }[loss]

    def describe(self) -> str:
        """The setting in one line of words (for figure captions)."""
        return (
            f"one anchor, 1 positive + {self.num_negatives} negatives (two views, batch {self.batch_size}), "
            f"t = {self.temperature:g}; the others fixed at cos {self.positive_similarity:g} (positive) "
            f"and {self.negative_similarity:g} (negatives)"
        )


def relative_row_losses(loss: str, similarity: Tensor, setting: RelativesSetting = RelativesSetting()) -> Tensor:
    """Per-anchor loss of each row of ``similarity``: column 0 the positive, the rest negatives.

    Args:
        loss: one of :data:`RELATIVES`.
        similarity: ``(K, 1 + n)`` cosine similarities of ``K`` anchors to their positive
            (column 0) and ``n`` negatives; differentiable.
        setting: the hyper-parameters (and, for DCLW, the other images' positive similarity
            and the batch size ``B = n / 2 + 1`` that its weight sees).

    Returns:
        ``(K,)`` per-anchor losses ``L_i`` (not averaged).

    Raises:
        ValueError: for an unknown ``loss``, a ``similarity`` without a negative, or
            hyper-parameters out of range.
    """
    if loss not in RELATIVES:
        raise ValueError(f"loss must be one of {', '.join(RELATIVES)}, got {loss!r}")
    if similarity.ndim != 2 or similarity.shape[1] < 2:
        raise ValueError(f"similarity must be (K, 1 + n) with n >= 1 negatives, got {tuple(similarity.shape)}")
    t = setting.temperature
    validate_estimator_hyperparameters(t, setting.tau_plus, setting.beta)
    validate_hyperparameters(t, setting.k1, setting.k2)
    check_number("sigma", setting.sigma, positive=True)
    count, keys = similarity.shape  # anchors, 1 + n
    positive, negatives = similarity[:, 0] / t, similarity[:, 1:] / t
    if loss in ("ntxent", "tcl"):
        # TCL with one positive: -s_p/t + log(exp(s_p/t) + k1 exp(-s_p) + k2 sum_n exp(s_n/t)).
        k1, k2 = (0.0, 1.0) if loss == "ntxent" else (setting.k1, setting.k2)
        terms = [positive, torch.logsumexp(negatives, dim=1) + math.log(k2)]
        if k1 > 0:
            terms.append(math.log(k1) - similarity[:, 0])
        return torch.logsumexp(torch.stack(terms, dim=1), dim=1) - positive
    if loss in ("dcl", "dclw"):
        weight = torch.ones_like(positive)
        if loss == "dclw":
            # lightly's negative_mises_fisher_weights over the batch's positive pairs (detached).
            others = setting.positive_similarity / setting.sigma
            own = similarity[:, 0].detach() / setting.sigma
            if setting.batch_size > 1:  # the anchor's entry of the softmax over B pairs
                share = torch.sigmoid(own - others - math.log(setting.batch_size - 1))
            else:
                share = torch.ones_like(own)
            weight = 2.0 - setting.batch_size * share
        return -weight * positive + torch.logsumexp(negatives, dim=1)
    beta = setting.beta if loss == "hcl" else 0.0
    group = torch.zeros(count, dtype=torch.long, device=similarity.device)
    key_groups = (torch.arange(keys, device=similarity.device) > 0).long()
    losses, _ = estimator_terms(similarity, group, key_groups, None, t, setting.tau_plus, beta)
    return losses


def relative_pair_coefficient(
    similarities: Tensor, kind: PairKind, loss: str, setting: RelativesSetting = RelativesSetting()
) -> Tensor:
    """``dL/dS`` of the relatives-column anchor on its swept pair, for each swept similarity.

    Args:
        similarities: ``(K,)`` cosine similarities of the swept positive or negative.
        kind: ``"positive"`` (the anchor's one positive) or ``"negative"`` (one of its negatives).
        loss: one of :data:`RELATIVES`.
        setting: the fixed rest of the anchor's keys and the hyper-parameters.

    Returns:
        ``(K,)`` ``dL_i/dS`` of the swept pair, by autograd of :func:`relative_row_losses`
        (pull = minus this for the positive, push = this for a negative).

    Raises:
        ValueError: for an unknown ``kind`` or ``loss``, or hyper-parameters out of range.
    """
    if kind not in ("positive", "negative"):
        raise ValueError(f"kind must be 'positive' or 'negative', got {kind!r}")
    if setting.num_negatives < 1:
        raise ValueError(f"the setting needs at least one negative, got {setting}")
    count = similarities.numel()
    similarity = torch.full(
        (count, 1 + setting.num_negatives),
        setting.negative_similarity,
        dtype=similarities.dtype,
        device=similarities.device,
    )
    similarity[:, 0] = setting.positive_similarity
    column = 0 if kind == "positive" else 1
    similarity[:, column] = similarities.detach()
    with torch.enable_grad():
        similarity.requires_grad_(True)
        (grad,) = torch.autograd.grad(relative_row_losses(loss, similarity, setting).sum(), similarity)
    return grad[:, column]


def plot_gradients(
    path: str | Path,
    k1_values: Sequence[float] = (0.0, 100.0, 1000.0, 5000.0),
    k2_values: Sequence[float] = (1.0, 2.0, 4.0),
    k1_for_k2: float = 5000.0,
    setting: SweepSetting = SweepSetting(),
    points: int = 201,
    relatives: RelativesSetting | None = RelativesSetting(),
) -> Path:
    """Plot pull on one positive and push on one negative against their cosine similarity.

    Pull (top) and push (bottom), for TCL at each ``k1`` with ``k2 = 1`` (left) and at each
    ``k2`` with ``k1 = k1_for_k2`` (middle), SupCon (``k1=0, k2=1``) the dashed black reference;
    and (right, unless ``relatives=None``) TCL's relatives on a two-view anchor: NT-Xent,
    TCL, DCL, DCLW, HCL and the debiased loss (:data:`RELATIVES`).

    Args:
        path: the PNG to write (its folder is created).
        k1_values: the ``k1`` of the left column's curves (``0`` is left out: it is SupCon).
        k2_values: the ``k2`` of the middle column's curves.
        k1_for_k2: the ``k1`` of the middle column's curves.
        setting: the controlled anchor of the TCL columns.
        points: similarities per curve, evenly spaced over ``[-1, 1]``.
        relatives: the relatives column's anchor and hyper-parameters; ``None`` leaves it out.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    import matplotlib  # deferred: matplotlib is needed only for this figure, and slow to import

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # deferred: after choosing the Agg backend above

    x = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    columns = [
        ("k1 varies, k2 = 1", [(k1, 1.0) for k1 in k1_values if k1 > 0], "k1"),
        (f"k2 varies, k1 = {k1_for_k2:g}", [(k1_for_k2, k2) for k2 in k2_values], "k2"),
    ]
    width = 3 if relatives is not None else 2
    fig, axes = plt.subplots(2, width, figsize=(5.5 * width, 8.5), sharex=True, squeeze=False)
    colors = plt.get_cmap("viridis")
    for col, (title, knobs, varied) in enumerate(columns):
        for row, kind in enumerate(PAIR_KINDS):
            ax = axes[row, col]
            sign = -1.0 if kind == "positive" else 1.0
            supcon = sign * sweep_pair_coefficient(x, kind, 0.0, 1.0, setting)
            ax.plot(x, supcon, "k--", lw=2, label="SupCon (k1=0, k2=1)")
            for index, (k1, k2) in enumerate(knobs):
                y = sign * sweep_pair_coefficient(x, kind, k1, k2, setting)
                value = k1 if varied == "k1" else k2
                color = colors(0.15 + 0.7 * index / max(len(knobs) - 1, 1))
                ax.plot(x, y, color=color, lw=2, label=f"TCL {varied}={value:g}")
            _decorate(ax, kind, title)
    # Same y-range for both TCL pull panels, both TCL push panels.
    for row in range(2):
        low = min(ax.get_ylim()[0] for ax in axes[row, :2])
        high = max(ax.get_ylim()[1] for ax in axes[row, :2])
        for ax in axes[row, :2]:
            ax.set_ylim(low, high)
    if relatives is not None:
        styles: dict[str, tuple[str, str]] = {"ntxent": ("k", "--"), "tcl": ("tab:purple", "-")}
        styles |= {"dcl": ("tab:blue", "-"), "dclw": ("tab:cyan", ":")}
        styles |= {"hcl": ("tab:red", "-"), "debiased": ("tab:orange", "-.")}
        for row, kind in enumerate(PAIR_KINDS):
            ax = axes[row, 2]
            sign = -1.0 if kind == "positive" else 1.0
            for loss in RELATIVES:
                line_color, style = styles[loss]
                y = sign * relative_pair_coefficient(x, kind, loss, relatives)
                ax.plot(x, y, color=line_color, ls=style, lw=2, label=relatives.label(loss))
            # symlog: HCL's weights carry gradient (as in the official code), so it pulls easy negatives in.
            _decorate(ax, kind, f"relatives, t = {relatives.temperature:g}, 1 positive", symlog=True)
    fig.suptitle(
        "Gradient on one pair vs. its similarity to the anchor "
        "(hard positives: low similarity, top; hard negatives: high similarity, bottom)\n"
        "left, middle: TCL, "
        + setting.describe()
        + ("" if relatives is None else "\nright: TCL's relatives, " + relatives.describe()),
        fontsize=11,
        x=0.01,
        ha="left",
    )
    fig.text(
        0.5,
        0.005,
        "Pull < 0: a positive that already dominates the other positives is pushed back towards them "
        "(SupCon's L_out). Computed with tcl-ssl gradients.",
        ha="center",
        fontsize=8.5,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.99))
    path = save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def _decorate(ax: Axes, kind: PairKind, title: str, symlog: bool = False) -> None:
    """Labels, scale and legend of one pull (positive) or push (negative) panel; ``symlog``: a
    push axis that also shows negative pushes (linear within 1e-4 of 0)."""
    if kind == "positive":
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_ylabel("pull on the positive  $-\\partial L_i/\\partial s_{ip}$")
        ax.set_title(f"Pull on one positive ({title})", fontsize=11)
    else:
        if symlog:
            ax.set_yscale("symlog", linthresh=1e-4)
            ax.axhline(0.0, color="grey", lw=0.8)
        else:
            ax.set_yscale("log")
        scale = "symlog" if symlog else "log"
        ax.set_ylabel(f"push on the negative  $\\partial L_i/\\partial s_{{in}}$ ({scale})")
        ax.set_title(f"Push on one negative ({title})", fontsize=11)
        ax.set_xlabel("cosine similarity of that pair to the anchor")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8.5)
