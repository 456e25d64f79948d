"""TCL for pytorch-metric-learning (PML) users.

:class:`TCLPMLLoss` is a PML loss function like PML's own ``SupConLoss``: it is a
``GenericPairLoss`` (matrix based), so it takes ``loss(embeddings, labels)``, an
``indices_tuple`` (pairs or triplets, e.g. from a miner), ``ref_emb`` / ``ref_labels``, a PML
``distance`` (default ``CosineSimilarity``), a PML ``reducer`` and an
``embedding_regularizer``::

    from tcl_ssl.pml import TCLPMLLoss
    loss_fn = TCLPMLLoss(temperature=0.1, k1=5000.0, k2=1.0)
    loss = loss_fn(embeddings, labels)                        # (N, D), (N,)
    loss = loss_fn(embeddings, labels, indices_tuple=miner(embeddings, labels))

For anchor ``i`` the positives ``P(i)`` and negatives ``N(i)`` are the pairs PML gives the
loss (by default: same label / other label, the anchor itself excluded), ``S`` is the
similarity from the distance (``-distance`` for a non-inverted distance such as
``LpDistance``, as in ``SupConLoss``), and the per-anchor loss is TCL's (see
:mod:`tcl_ssl.loss`)::

    L_i = log D_i - 1/|P(i)| sum_{p in P(i)} S_ip / t
    D_i = sum_P exp(S_ip / t) + k1 sum_P exp(-S_ip) + k2 sum_N exp(S_in / t)

computed in log space (one log-sum-exp). As in PML's ``SupConLoss``, a batch without a
positive pair or without a negative pair gives 0, and the loss comes back in the embeddings'
dtype (float16 in, float16 out; it is computed in float32). Otherwise the loss returns one
element per anchor that has at least one positive, and the default ``MeanReducer`` averages them: with the default
distance this is exactly :func:`tcl_ssl.loss.tcl_loss` (the mean over anchors with a
positive). ``AvgNonZeroReducer`` (``SupConLoss``'s default) gives the same value except in
the degenerate case where an anchor's loss is exactly 0. With ``k1=0, k2=1`` the loss is
``SupConLoss``. Keys that are neither a positive nor a negative of an anchor (e.g. dropped
by a miner) are left out of its denominator, as in ``SupConLoss``.

PML's wrappers ``SelfSupervisedLoss`` and ``CrossBatchMemory`` accept only the losses
named in their hard-coded ``supported_losses()``. This module exports subclasses of the
two wrappers, under the same names, whose list adds ``TCLPMLLoss``; everything else
(queue, self-comparison removal, symmetric views) is PML's own code::

    from tcl_ssl.pml import CrossBatchMemory, SelfSupervisedLoss, TCLPMLLoss
    loss_fn = CrossBatchMemory(TCLPMLLoss(), embedding_size=128, memory_size=4096)
    loss_fn = SelfSupervisedLoss(TCLPMLLoss())          # loss_fn(emb, ref_emb)

The subclasses are ``isinstance`` of PML's classes, with the same constructor and behaviour,
and accept every loss PML's own classes accept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import common_functions as c_f
from torch import Tensor

from tcl_ssl.input_checks import check_embeddings, check_ids, check_same_device, scaled
from tcl_ssl.loss import check_block_sizes, tcl_loss, validate_hyperparameters
from tcl_ssl.loss_core import DENSE_ELEMENTS

__all__ = ["TCLPMLLoss", "SelfSupervisedLoss", "CrossBatchMemory"]


class TCLPMLLoss(pml_losses.GenericPairLoss):
    """Tuned Contrastive Learning as a pytorch-metric-learning loss function.

    Call it as any PML loss: ``loss(embeddings, labels=None, indices_tuple=None,
    ref_emb=None, ref_labels=None)`` with ``embeddings`` ``(N, D)``, ``labels`` ``(N,)``,
    ``ref_emb`` ``(M, D)`` and ``ref_labels`` ``(M,)``. The result is a scalar tensor.

    With ``k1=0, k2=1`` it is PML's ``SupConLoss(temperature)``, and with the default distance
    and reducer it is :func:`tcl_ssl.loss.tcl_loss` (see the module notes on reducers).

    Args:
        temperature: softmax temperature ``t`` (> 0).
        k1: weight of the hard-positive term ``exp(-S_ip)`` (>= 0; 0 gives SupCon).
        k2: weight of the negatives (> 0).
        block_size, key_block_size: the tiles of :func:`tcl_ssl.loss.tcl_loss`. With PML's
            defaults (cosine similarity, ``MeanReducer``, no regularizer) and no
            ``indices_tuple``, a batch of more than ``2**21`` pairs, or any batch when
            ``block_size`` is given, is computed by ``tcl_loss`` in tiles (same value, no
            ``(N, M)`` matrix); otherwise PML builds the matrix.
        **kwargs: PML's ``distance``, ``reducer``, ``embedding_regularizer``, ... .
            Defaults: ``CosineSimilarity()`` and ``MeanReducer()`` over the anchors that
            have a positive.

    Raises:
        ValueError: for a hyper-parameter out of range.

    Example:
        >>> import torch
        >>> from tcl_ssl.pml import TCLPMLLoss
        >>> loss_fn = TCLPMLLoss(temperature=0.1, k1=5000.0, k2=1.0)
        >>> embeddings, labels = torch.randn(12, 16), torch.arange(12) % 4
        >>> loss = loss_fn(embeddings, labels)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        k1: float = 5000.0,
        k2: float = 1.0,
        block_size: int | None = None,
        key_block_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        temperature, k1, k2 = validate_hyperparameters(temperature, k1, k2)
        self.block_size, self.key_block_size = check_block_sizes(block_size, key_block_size)
        super().__init__(mat_based_loss=True, **kwargs)
        self.temperature = temperature
        self.k1 = k1
        self.k2 = k2
        self.add_to_recordable_attributes(list_of_names=["temperature", "k1", "k2"], is_stat=False)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: Any = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """PML's loss call, with the inputs checked first (a batch with rows and columns, data
        on one device, integer labels) and, for a distance that normalises, each row scaled
        by its largest absolute value first, so that embeddings whose norm would overflow
        give the loss of their directions.

        Raises:
            ValueError: naming the argument and what is wrong.
        """
        check_embeddings("embeddings", embeddings, check_finite=False)
        if labels is not None:
            check_ids("labels", labels, embeddings.shape[0])
        if ref_emb is not None:
            check_embeddings("ref_emb", ref_emb, check_finite=False)
            if ref_labels is not None:
                check_ids("ref_labels", ref_labels, ref_emb.shape[0])
        check_same_device(embeddings=embeddings, labels=labels, ref_emb=ref_emb, ref_labels=ref_labels)
        if labels is not None and self._tiles(embeddings, indices_tuple, ref_emb):
            return self._tiled_loss(embeddings, labels, ref_emb, ref_labels).to(embeddings.dtype)
        dtype = embeddings.dtype
        if getattr(self.distance, "normalize_embeddings", False):
            embeddings = scaled(embeddings)
            ref_emb = None if ref_emb is None else scaled(ref_emb)
        result: Tensor = super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        return result.to(dtype)

    def _tiles(self, embeddings: Tensor, indices_tuple: Any, ref_emb: Tensor | None) -> bool:
        """Whether this call goes to :func:`tcl_ssl.loss.tcl_loss` (see ``block_size``)."""
        distance = self.distance
        defaults = (
            type(distance) is CosineSimilarity
            and distance.normalize_embeddings
            and distance.power == 1
            and type(self.reducer) is MeanReducer
            and self.embedding_regularizer is None
            and indices_tuple is None
        )
        keys = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
        return defaults and (self.block_size is not None or embeddings.shape[0] * keys > DENSE_ELEMENTS)

    def _tiled_loss(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> Tensor:
        """The loss by :func:`tcl_ssl.loss.tcl_loss`; an embedding is not its own key (PML leaves
        out the diagonal only when ``ref_emb`` is not given); 0 when no pair is a negative."""
        keys = key_groups = None
        if ref_emb is not None:
            keys, key_groups = ref_emb, labels if ref_labels is None else ref_labels
        all_labels = labels if key_groups is None else torch.cat([labels, key_groups.to(labels.device)])
        if bool((all_labels == all_labels[0]).all()):  # no negative pair: PML's SupConLoss gives 0
            return torch.zeros((), device=embeddings.device) + embeddings.float().sum() * 0
        return tcl_loss(
            embeddings,
            labels,
            self.temperature,
            self.k1,
            self.k2,
            keys=keys,
            key_groups=key_groups,
            block_size=self.block_size,
            key_block_size=self.key_block_size,
        )

    def _compute_loss(self, mat: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> dict[str, Any]:
        """Per-anchor TCL losses from the ``(N, M)`` distance matrix and 0/1 pair masks."""
        pos, neg = pos_mask.bool(), neg_mask.bool()
        has_pos = pos.any(dim=1)
        if not bool(has_pos.any()) or not bool(neg.any()):  # as PML's SupConLoss: no positive or no negative pair
            return self.zero_losses()
        anchors = torch.nonzero(has_pos).squeeze(1)
        # Only rows with a positive: every log-sum-exp below has a finite term.
        mat, pos, neg = mat[anchors], pos[anchors], neg[anchors]
        mat = mat.to(torch.promote_types(mat.dtype, torch.float32))  # float16 under autocast
        sim = mat if self.distance.is_inverted else -mat
        logits = sim / self.temperature
        floor = c_f.neg_inf(logits.dtype)  # finite, so masked rows give no NaN gradients
        # Columns of D_i: exp(logit) for positives, k2 exp(logit) for negatives, and
        # k1 exp(-S) for positives, all in log space.
        weighted = torch.where(neg, logits + math.log(self.k2), logits).masked_fill(~(pos | neg), floor)
        parts = [weighted]
        if self.k1 > 0:
            parts.append((math.log(self.k1) - sim).masked_fill(~pos, floor))
        log_denominator = torch.logsumexp(torch.cat(parts, dim=1), dim=1)
        mean_pos_logit = (logits * pos).sum(dim=1) / pos.sum(dim=1)
        return {
            "loss": {
                "losses": log_denominator - mean_pos_logit,
                "indices": anchors,
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self) -> MeanReducer:
        """The reducer used when none is given: the mean over the anchors that have a positive."""
        return MeanReducer()

    def get_default_distance(self) -> CosineSimilarity:
        """The distance used when none is given: cosine similarity."""
        return CosineSimilarity()


class SelfSupervisedLoss(pml_losses.SelfSupervisedLoss):
    """PML's ``SelfSupervisedLoss`` that also accepts :class:`TCLPMLLoss`.

    ``loss_fn(embeddings, ref_emb)`` with two ``(B, D)`` views: item ``b`` of both views
    share the label ``b``. ``symmetric=True`` (default) stacks both views as anchors and
    keys (TCL/NT-Xent over ``2B`` samples); ``symmetric=False`` uses ``embeddings`` as
    anchors and ``ref_emb`` as keys. Constructor arguments are PML's.

    Example:
        >>> import torch
        >>> from tcl_ssl.pml import SelfSupervisedLoss, TCLPMLLoss
        >>> loss_fn = SelfSupervisedLoss(TCLPMLLoss())
        >>> view0, view1 = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss_fn(view0, view1).shape
        torch.Size([])
    """

    @staticmethod
    def supported_losses() -> list[str]:
        """PML's supported loss names plus ``"TCLPMLLoss"``."""
        return [*pml_losses.SelfSupervisedLoss.supported_losses(), TCLPMLLoss.__name__]


class CrossBatchMemory(pml_losses.CrossBatchMemory):
    """PML's ``CrossBatchMemory`` (a queue of past embeddings) that also accepts :class:`TCLPMLLoss`.

    ``loss_fn(embeddings, labels)``: the batch is enqueued first, then the anchors (the
    batch) are contrasted with the whole memory, the current batch included, each anchor's
    own memory slot excluded. Memory entries carry no gradient. Constructor arguments are
    PML's.

    Example:
        >>> import torch
        >>> from tcl_ssl.pml import CrossBatchMemory, TCLPMLLoss
        >>> loss_fn = CrossBatchMemory(TCLPMLLoss(), embedding_size=16, memory_size=64)
        >>> embeddings, labels = torch.randn(8, 16), torch.arange(8) % 4
        >>> loss_fn(embeddings, labels).shape
        torch.Size([])
    """

    @staticmethod
    def supported_losses() -> list[str]:
        """PML's supported loss names plus ``"TCLPMLLoss"``."""
        return [*pml_losses.CrossBatchMemory.supported_losses(), TCLPMLLoss.__name__]
