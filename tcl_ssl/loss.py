"""Tuned Contrastive Learning (TCL) loss.

Reference: Animesh & Chandraker, "Tuned Contrastive Learning", WACV 2025 (arXiv 2305.10675).

For an anchor ``i`` with positives ``P(i)`` and negatives ``N(i)`` (L2-normalised embeddings
``z``, temperature ``t``)::

    L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / D_i )
    D_i = sum_{p in P(i)} exp(z_i.z_p / t)
        + k1 * sum_{p in P(i)} exp(-z_i.z_p)          # no temperature here
        + k2 * sum_{n in N(i)} exp(z_i.z_n / t)

and the loss is the mean of ``L_i`` over the anchors that have at least one positive.
With ``k1 = 0, k2 = 1`` this is SupCon (L_out); with two views and no labels it is NT-Xent.

The module :class:`TCLLoss` is a drop-in next to lightly's losses (``loss(out0, out1)``);
:func:`tcl_loss` is the functional form on flat embeddings and group ids, and
:func:`tcl_terms` the per-anchor core on a similarity matrix.

Implementation (:mod:`tcl_ssl.loss_core`): the similarities ``S = Z K^T`` are evaluated in
tiles of anchors by keys, with each anchor's denominator as a shifted log-sum-exp and the
closed-form gradient ``dL/dS`` turned into ``dL/dz`` and ``dL/dk`` (two matrix products) tile
by tile in the forward pass. Up to ``2**21`` similarities (``N = M = 1448``) the whole
matrix is one tile (the dense path); above, tiles of about ``2**22`` similarities bound the
extra memory to ``O(N x block + (N + M) x D)``, whatever the batch size (``block_size``
sets it by hand).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.utils import dist
from torch import Tensor, nn

from tcl_ssl.input_checks import (
    check_count,
    check_embeddings,
    check_flag,
    check_ids,
    check_keys,
    check_number,
    check_same_device,
    stable_normalize,
)
from tcl_ssl.loss_core import TCLFunction, TCLTerms, plan_blocks, positive_pairs, tcl_terms
from tcl_ssl.memory_bank import LabeledMemoryBank

__all__ = [
    "TCLLoss",
    "tcl_loss",
    "tcl_terms",
    "TCLTerms",
    "default_anchor_weights",
    "flatten_views",
    "positive_pairs",
    "validate_hyperparameters",
    "query_bank_loss",
    "BANK_MODES",
]


def validate_hyperparameters(temperature: float, k1: float, k2: float) -> tuple[float, float, float]:
    """Check TCL's hyper-parameters: Python or numpy numbers, never booleans or texts.

    Args:
        temperature: softmax temperature ``t``; must be a finite number > 0.
        k1: weight of the hard-positive term; must be a finite number >= 0.
        k2: weight of the negatives; must be a finite number > 0.

    Returns:
        ``(temperature, k1, k2)`` as floats.

    Raises:
        ValueError: naming the first hyper-parameter that is not allowed, its value and what is.
    """
    return (
        check_number("temperature", temperature, positive=True),
        check_number("k1", k1, minimum=0),
        check_number("k2", k2, positive=True),
    )


def _check_equal_batches(batch: int, device: torch.device) -> None:
    """Raise ``ValueError`` on every process unless all processes pass ``batch`` rows (one tiny all_gather)."""
    size = torch.tensor([batch], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.world_size())]
    torch.distributed.all_gather(sizes, size)
    found = [int(s) for s in sizes]
    if len(set(found)) > 1:
        raise ValueError(
            f"gather_distributed needs the same batch size on every process, got {found} (by rank); "
            "use drop_last=True with a DistributedSampler, or pad the last batch"
        )


def tcl_loss(
    embeddings: Tensor,
    groups: Tensor,
    temperature: float = 0.1,
    k1: float = 5000.0,
    k2: float = 1.0,
    *,
    keys: Tensor | None = None,
    key_groups: Tensor | None = None,
    self_index: Tensor | None = None,
    anchor_weights: Tensor | None = None,
    normalize: bool = True,
    check_finite: bool = True,
    block_size: int | None = None,
    key_block_size: int | None = None,
) -> Tensor:
    """TCL loss of anchors ``embeddings`` against ``keys`` (default: the anchors themselves).

    The functional form of :class:`TCLLoss` on flat embeddings: every row of ``embeddings`` is
    an anchor, and its group id decides which keys are its positives.

    Args:
        embeddings: ``(N, D)`` anchor embeddings (normalised here unless ``normalize=False``).
        groups: ``(N,)`` integer group id of each anchor (class label, or image id for
            self-supervised learning): keys of the same group are positives, others negatives.
        temperature: softmax temperature ``t`` (> 0).
        k1: weight of the hard-positive term ``exp(-z_i.z_p)`` (>= 0; 0 gives SupCon).
        k2: weight of the negatives (> 0).
        keys: ``(M, D)`` contrast set; ``None`` means ``embeddings`` with each anchor's own
            entry excluded. Gradients flow into keys that require them.
        key_groups: ``(M,)`` group ids of ``keys`` (required with ``keys``).
        self_index: ``(N,)`` column of each anchor's own entry in ``keys`` (excluded), or
            ``-1`` where it has none. Only with ``keys``; ``None`` means no anchor is a key.
        anchor_weights: ``(N,)`` weight of each anchor's loss in the returned sum. Default:
            ``1 / (number of anchors with a positive)`` for those anchors, 0 for the others,
            i.e. the mean over anchors that have a positive.
        normalize: L2-normalise ``embeddings`` and ``keys`` first.
        check_finite: refuse NaN or inf in ``embeddings`` and ``keys`` (a host-device
            synchronisation on a GPU). ``False`` lets them through to a NaN loss, for training
            loops that watch the loss themselves (a float16 GradScaler skips such steps).
        block_size: anchors per tile. ``None`` (default) chooses by size: the dense path
            (one ``N x M`` similarity matrix) up to ``N * M = 2**21``, tiles of about
            ``2**22`` similarities above. Any value gives the same loss and gradients up to
            floating-point rounding; smaller tiles use less memory.
        key_block_size: keys per tile; ``None``: all keys (or as the automatic choice needs).
            Fewer keys than ``M`` per tile stream each anchor's log-sum-exp over the key
            blocks and compute every tile twice.

    Returns:
        Scalar loss, float32 (float64 for float64 input), also under autocast. A batch in
        which no anchor has a positive returns ``0`` (still attached to the graph, with zero
        gradients), as pytorch-metric-learning's losses do.

    Raises:
        ValueError: on bad shapes, dtypes, non-finite values or hyper-parameters.

    Example:
        >>> import torch
        >>> from tcl_ssl import tcl_loss
        >>> z = torch.randn(6, 16)                   # two views of three images, stacked
        >>> image_ids = torch.tensor([0, 1, 2, 0, 1, 2])
        >>> loss = tcl_loss(z, image_ids, temperature=0.1, k1=5000.0, k2=1.0)
        >>> loss.shape, loss.dtype
        (torch.Size([]), torch.float32)
    """
    temperature, k1, k2 = validate_hyperparameters(temperature, k1, k2)
    normalize, check_finite = check_flag("normalize", normalize), check_flag("check_finite", check_finite)
    block_size, key_block_size = check_block_sizes(block_size, key_block_size)
    check_embeddings("embeddings", embeddings, check_finite)
    check_ids("groups", groups, embeddings.shape[0])
    if anchor_weights is not None:
        _check_weights(anchor_weights, embeddings.shape[0])
    check_same_device(
        embeddings=embeddings,
        groups=groups,
        keys=keys,
        key_groups=key_groups,
        self_index=self_index,
        anchor_weights=anchor_weights,
    )
    check_keys(embeddings, keys, key_groups, self_index, check_finite)

    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        dtype = torch.promote_types(embeddings.dtype, torch.float32)  # float32, or float64
        anchors = embeddings.to(dtype)
        if normalize:
            anchors = stable_normalize(anchors)
        groups = groups.long()
        if keys is None:
            keys_, key_groups_ = anchors, groups
            self_index = torch.arange(anchors.shape[0], device=anchors.device)
        else:
            keys_ = keys.to(dtype)
            keys_ = stable_normalize(keys_) if normalize else keys_
            assert key_groups is not None  # checked above
            key_groups_ = key_groups.long()
            self_index = None if self_index is None else self_index.long()
        if anchor_weights is None:
            anchor_weights = default_anchor_weights(groups, key_groups_, self_index, dtype)
        row_block, key_block = plan_blocks(anchors.shape[0], keys_.shape[0], block_size, key_block_size)
        return TCLFunction.apply(
            anchors,
            keys_,
            groups,
            key_groups_,
            self_index,
            anchor_weights.to(dtype),
            temperature,
            k1,
            k2,
            row_block,
            key_block,
        )


def check_block_sizes(block_size: Any, key_block_size: Any) -> tuple[int | None, int | None]:
    """``block_size`` and ``key_block_size``: each ``None`` or an integer >= 1.

    Raises:
        ValueError: naming the value that is not allowed.
    """
    return tuple(  # type: ignore[return-value]
        None if value is None else _block_count(name, value)
        for name, value in (("block_size", block_size), ("key_block_size", key_block_size))
    )


def _block_count(name: str, value: Any) -> int:
    try:
        return check_count(name, value, minimum=1)
    except ValueError:
        raise ValueError(f"{name} must be None (automatic) or an integer >= 1, got {value!r}") from None


def _check_weights(weights: Any, length: int) -> None:
    """``anchor_weights``: a floating ``(length,)`` tensor with data."""
    if not isinstance(weights, Tensor) or weights.is_meta:
        raise ValueError(f"anchor_weights must be a torch.Tensor with data, got {weights!r}")
    if weights.shape != (length,) or not weights.is_floating_point():
        raise ValueError(
            f"anchor_weights must be a floating ({length},) tensor, got shape {tuple(weights.shape)}, dtype {weights.dtype}"
        )


def default_anchor_weights(
    anchor_groups: Tensor,
    key_groups: Tensor,
    self_index: Tensor | None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Weights that make :func:`tcl_loss`'s weighted sum the mean over anchors with a positive.

    Args:
        anchor_groups: ``(N,)`` integer group id of each anchor.
        key_groups: ``(M,)`` integer group id of each key.
        self_index: ``(N,)`` column of each anchor's own key (not its positive), ``-1`` where
            it has none; ``None`` when no anchor is among the keys.
        dtype: dtype of the result.

    Returns:
        ``(N,)`` weights: ``1 / (number of anchors with a positive)`` for those anchors, 0 for
        the others (all 0 when no anchor has a positive).
    """
    sorted_keys = torch.sort(key_groups).values
    counts = torch.searchsorted(sorted_keys, anchor_groups, right=True) - torch.searchsorted(
        sorted_keys, anchor_groups, right=False
    )
    if self_index is not None:  # the anchor's own key is not its positive
        own = (self_index >= 0) & (key_groups[self_index.clamp_min(0)] == anchor_groups)
        counts = counts - own.long()
    has_pos = (counts > 0).to(dtype)
    return has_pos / has_pos.sum().clamp_min(1)


ANCHOR_MODES = ("all", "first")
#: ``memory_bank_mode`` values: this project's labelled bank, or lightly's ``NTXentLoss`` bank
BANK_MODES = ("labeled", "lightly")


class TCLLoss(nn.Module):
    """Tuned Contrastive Learning loss of two or more views, a drop-in for lightly's ``NTXentLoss``.

    ``TCLLoss(temperature=t, k1=0)`` is exactly NT-Xent (lightly's ``NTXentLoss(temperature=t)``)
    and, with labels, SupCon (pytorch-metric-learning's ``SupConLoss(temperature=t)``).

    Call it with the projections of ``V >= 2`` views of the same batch of ``B`` images, each
    ``(B, D)`` (L2-normalised inside), and optionally their ``(B,)`` integer ``labels``. Without
    labels the positives of a view are the other views of its image (self-supervised); with
    labels, every view of every image of its class (supervised). Every other key is a
    negative. The loss is the mean of ``L_i`` (see :mod:`tcl_ssl.loss`) over the anchors that
    have at least one positive, computed in float32 (float64 for float64 input), also under
    autocast::

        loss_fn = TCLLoss()                       # t=0.1, k1=5000, k2=1
        loss = loss_fn(out0, out1)                # self-supervised: positives = other views
        loss = loss_fn(out0, out1, out2)          # any number of views
        loss = loss_fn(out0, out1, labels=y)      # supervised: positives = same label

    Memory bank (``memory_bank_size``), in one of two modes (``memory_bank_mode``):

    - ``"labeled"`` (default): the loss keeps the last ``K`` keys of past calls (gathered
      across processes with ``gather_distributed``) in a
      :class:`~tcl_ssl.memory_bank.LabeledMemoryBank` and adds them to every anchor's keys,
      next to the batch's own. Without labels every bank entry is a negative; with labels, the
      entries of the anchor's label are positives and the others negatives. ``anchors`` decides
      which views are keys, and so which go into the bank. In training mode (``loss_fn.train()``)
      each call enqueues its keys after computing the loss, so the loss always sees the bank as
      it was before the call; in eval mode the bank is left unchanged. The bank starts empty
      (only filled entries are keys).
    - ``"lightly"``: lightly's ``NTXentLoss(temperature, memory_bank_size=(K, D))`` exactly, with
      TCL's ``k1`` / ``k2`` on top. The anchors are ``out0`` only; each one's positive is its own
      image's ``out1`` and its negatives are the ``K`` bank entries only (not the batch's other
      keys). The bank is lightly's ``MemoryBankModule``: ``K`` random unit vectors drawn from
      torch's global generator when the loss is built, then ``out1`` (normalised; gathered
      across processes with ``gather_distributed``) written after the loss at a pointer that
      wraps to 0, a batch that reaches the end of the bank losing its rows beyond it. As in
      lightly, the bank is updated when ``out0`` requires a gradient, whatever the train/eval
      mode. Two views, no labels, ``memory_bank_size=(K, D)``.

    ``forward(..., update_bank=False)`` leaves the bank unchanged, for several calls that
    should see the same bank, whose keys :meth:`enqueue` then adds. Either bank is saved in
    ``state_dict()``.

    Args:
        temperature: softmax temperature ``t`` (> 0).
        k1: weight of the hard-positive term ``exp(-z_i.z_p)`` (>= 0; 0 gives SupCon / NT-Xent).
        k2: weight of the negatives (> 0).
        gather_distributed: gather embeddings and group ids from all processes (with
            gradients, via ``lightly.utils.dist.gather``) so that every local anchor is
            contrasted with the global batch. Each process must pass the same batch size.
            The returned value is weighted so that its mean over processes is the loss of
            the global batch, and the gradients DDP averages equal the single-process ones.
        memory_bank_size: ``0`` (default): no memory bank. ``K``: a bank of the last ``K``
            keys, whose width ``D`` is taken from the first batch. ``(K, D)``: a bank of
            ``K`` keys of width ``D``; embeddings of another width are refused.
        memory_bank_mode: ``"labeled"`` (default) or ``"lightly"`` (see above; needs
            ``memory_bank_size=(K, D)``).
        anchors: ``"all"`` (default without a ``"lightly"`` bank): every view is both an anchor
            and a key, and all views go into the bank. ``"first"`` (the only choice with a
            ``"lightly"`` bank): the query/key form (MoCo): ``out0`` are the anchors (queries)
            and ``out1, ...`` the keys, the only views that go into the bank; with the
            ``"labeled"`` bank an anchor's positives are its own image's keys (or, with labels,
            every key and bank entry of its label), its negatives every other key in the batch
            and in the bank. ``None``: the default of the bank mode.
        check_inputs: refuse, with a ``ValueError``, NaN or inf in the views and, with
            ``gather_distributed``, batch sizes that differ between processes (which would
            make the gather hang or fail obscurely). Both checks wait for the device;
            ``False`` skips them, for training loops that watch the loss and feed equal
            batches (a non-finite input then gives a NaN loss, not an error).
        block_size: anchors per tile (see :func:`tcl_loss`); ``None`` (default) chooses by
            size: one similarity matrix up to ``2**21`` anchor-key pairs, tiles above, so
            that a batch of any size fits in ``O(N x block)`` extra memory.
        key_block_size: keys per tile (see :func:`tcl_loss`); ``None``: automatic.

    Returns:
        loss (Tensor): each call returns the scalar loss (float32, or float64 for float64
            views); ``0``, still attached to the graph, when no anchor has a positive.

    Raises:
        ValueError: at construction, for a hyper-parameter out of range (a temperature <= 0
            too, which lightly accepts), a bad ``memory_bank_size``, ``memory_bank_mode`` or
            ``anchors``, or ``gather_distributed=True`` without ``torch.distributed``. When
            called, for fewer than two views (other than two with a ``"lightly"`` bank),
            views of different shapes, ``labels`` of the wrong shape (or negative, with a
            memory bank; or any, with a ``"lightly"`` bank), views whose width differs from
            the memory bank's, and, with ``check_inputs``, NaN or inf in the views or batch
            sizes that differ between processes.

    Example:
        >>> import torch
        >>> from tcl_ssl import TCLLoss
        >>> loss_fn = TCLLoss(temperature=0.1, k1=5000.0, k2=1.0)
        >>> out0, out1 = torch.randn(8, 32), torch.randn(8, 32)  # projections of two views
        >>> loss = loss_fn(out0, out1)                            # self-supervised
        >>> loss = loss_fn(out0, out1, labels=torch.arange(8) % 3)  # supervised
        >>> loss.shape
        torch.Size([])

        With a memory bank of the last 64 keys (width taken from the first batch):

        >>> queue_loss = TCLLoss(memory_bank_size=64)
        >>> loss = queue_loss(out0, out1)   # the bank was empty; now it holds 16 keys
        >>> int(queue_loss.memory_bank.filled)
        16

        lightly's ``NTXentLoss(temperature=0.5, memory_bank_size=(64, 32))``, value and bank:

        >>> moco_loss = TCLLoss(temperature=0.5, k1=0.0, memory_bank_size=(64, 32), memory_bank_mode="lightly")
        >>> loss = moco_loss(out0.requires_grad_(), out1)   # out1 is now in the bank
        >>> int(moco_loss.memory_bank.bank_ptr)
        8
    """

    def __init__(
        self,
        temperature: float = 0.1,
        k1: float = 5000.0,
        k2: float = 1.0,
        gather_distributed: bool = False,
        memory_bank_size: int | tuple[int, int] = 0,
        anchors: str | None = None,
        check_inputs: bool = True,
        block_size: int | None = None,
        key_block_size: int | None = None,
        memory_bank_mode: str = "labeled",
    ) -> None:
        super().__init__()
        self.block_size, self.key_block_size = check_block_sizes(block_size, key_block_size)
        self.temperature, self.k1, self.k2 = validate_hyperparameters(temperature, k1, k2)
        self.check_inputs = check_flag("check_inputs", check_inputs)
        gather_distributed = check_flag("gather_distributed", gather_distributed)
        if gather_distributed and not torch.distributed.is_available():
            raise ValueError("gather_distributed=True but torch.distributed is not available")
        if memory_bank_mode not in BANK_MODES:
            raise ValueError(f"memory_bank_mode must be one of {', '.join(BANK_MODES)}; got {memory_bank_mode!r}")
        lightly_bank = memory_bank_mode == "lightly"
        if anchors is None:
            anchors = "first" if lightly_bank else "all"
        if anchors not in ANCHOR_MODES or (lightly_bank and anchors != "first"):
            allowed = "'first'" if lightly_bank else ", ".join(ANCHOR_MODES)
            raise ValueError(f"anchors must be {allowed} with memory_bank_mode={memory_bank_mode!r}; got {anchors!r}")
        self.gather_distributed = gather_distributed
        self.anchors = anchors
        self.memory_bank_mode = memory_bank_mode
        self.memory_bank: LabeledMemoryBank | MemoryBankModule | None
        if lightly_bank:
            self.memory_bank = _lightly_memory_bank(memory_bank_size, gather_distributed)
        else:
            self.memory_bank = _memory_bank(memory_bank_size)

    def extra_repr(self) -> str:
        bank = f", memory_bank_mode={self.memory_bank_mode!r}" if self.memory_bank is not None else ""
        return f"temperature={self.temperature}, k1={self.k1}, k2={self.k2}, anchors={self.anchors!r}{bank}"

    def forward(self, *views: Tensor, labels: Tensor | None = None, update_bank: bool = True) -> Tensor:
        """The loss of ``V >= 2`` views of one batch.

        Args:
            *views: ``V`` projections ``(B, D)``, one per view, of the same ``B`` images.
            labels: ``(B,)`` integer class labels for supervised TCL; ``None`` for
                self-supervised TCL (positives are the other views of the same image).
            update_bank: in training mode, put this call's keys into the memory bank after
                computing the loss; ``False`` leaves the bank as it is (for several calls that
                should all see the same bank; put their keys in afterwards with
                :meth:`enqueue`). Ignored without a memory bank.

        Returns:
            The scalar loss (float32, or float64 for float64 views).

        Raises:
            ValueError: for fewer than two views, views of different shapes, ``labels`` of the
                wrong shape (or negative, with a memory bank), views whose width differs from
                the memory bank's, and, with ``check_inputs``, NaN or inf in the views or batch
                sizes that differ between processes.
        """
        if isinstance(self.memory_bank, MemoryBankModule):
            return self._lightly_bank_loss(self.memory_bank, views, labels, update_bank)
        embeddings, groups = self._embeddings_and_groups(views, labels)
        batch = views[0].shape[0]
        distributed = self.gather_distributed and dist.world_size() > 1
        queries = self.anchors == "first"
        if not distributed and self.memory_bank is None and not queries:
            return tcl_loss(
                embeddings,
                groups,
                self.temperature,
                self.k1,
                self.k2,
                check_finite=self.check_inputs,
                block_size=self.block_size,
                key_block_size=self.key_block_size,
            )

        embeddings = _normalized_float(embeddings)
        if queries:
            anchors, anchor_groups = embeddings[:batch], groups[:batch]
            keys, key_groups = embeddings[batch:], groups[batch:]
            self_index = None
        else:
            anchors, anchor_groups = keys, key_groups = embeddings, groups
            self_index = torch.arange(embeddings.shape[0], device=embeddings.device)
        if distributed:
            if self.check_inputs:
                _check_equal_batches(batch, embeddings.device)
            local_keys = keys.shape[0]
            keys = torch.cat(dist.gather(keys), dim=0)
            key_groups = torch.cat(_all_gather_no_grad(key_groups), dim=0)
            if self_index is not None:
                self_index = self_index + dist.rank() * local_keys
        batch_keys, batch_groups = keys, key_groups
        if isinstance(self.memory_bank, LabeledMemoryBank):
            bank, bank_labels = self.memory_bank.get()
            if labels is None:
                bank_labels = torch.full_like(bank_labels, -1)  # never an anchor's image id
            keys = torch.cat([keys, bank.to(keys)], dim=0)
            key_groups = torch.cat([key_groups, bank_labels.to(key_groups.device)], dim=0)
        weights = default_anchor_weights(anchor_groups, key_groups, self_index, anchors.dtype)
        if distributed:
            weights = _global_mean_weights(weights)
        loss = tcl_loss(
            anchors,
            anchor_groups,
            self.temperature,
            self.k1,
            self.k2,
            keys=keys,
            key_groups=key_groups,
            self_index=self_index,
            anchor_weights=weights,
            normalize=False,
            check_finite=self.check_inputs,
            block_size=self.block_size,
            key_block_size=self.key_block_size,
        )
        if isinstance(self.memory_bank, LabeledMemoryBank) and self.training and update_bank:
            self.memory_bank.enqueue(batch_keys, None if labels is None else batch_groups)
        return loss

    def _lightly_bank_loss(
        self, bank: MemoryBankModule, views: tuple[Tensor, ...], labels: Tensor | None, update_bank: bool
    ) -> Tensor:
        """The loss with a ``"lightly"`` bank: queries ``out0`` against their own keys ``out1``
        and the bank as it was before the call; then ``out1`` into the bank as lightly puts it."""
        queries, keys = (_lightly_normalized(view) for view in self._lightly_bank_views(views, labels))
        update = update_bank and views[0].requires_grad
        _, negatives = bank(keys.detach(), update=update)  # the bank before this call's keys
        assert negatives is not None  # a lightly bank here has K >= 1
        return query_bank_loss(queries, keys, negatives, self.temperature, self.k1, self.k2)

    def _lightly_bank_views(self, views: tuple[Tensor, ...], labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(out0, out1)`` checked for a ``"lightly"`` bank (two views, no labels, the bank's width)."""
        if len(views) != 2:
            raise ValueError(f"memory_bank_mode='lightly' takes two views (out0, out1), got {len(views)}")
        if labels is not None:
            raise ValueError(
                "memory_bank_mode='lightly' is lightly's NTXentLoss with a memory bank, which takes no labels; "
                "use memory_bank_mode='labeled' for a bank with labels"
            )
        embeddings, _ = flatten_views(views, None)
        bank = self.memory_bank
        assert isinstance(bank, MemoryBankModule)
        if embeddings.shape[1] != bank.size[1]:
            raise ValueError(
                f"embeddings have dimension {embeddings.shape[1]} but the memory bank was built "
                f"for {bank.size[1]} (memory_bank_size=({bank.size[0]}, {bank.size[1]}))"
            )
        if self.check_inputs:
            for v, view in enumerate(views):
                check_embeddings(f"view {v}", view)
        return views[0], views[1]

    @torch.no_grad()
    def enqueue(self, *keys: Tensor, labels: Tensor | None = None) -> None:
        """Put keys into the memory bank, as :meth:`forward` does with its keys.

        For calls made with ``update_bank=False``. The keys are L2-normalised, and gathered
        across processes with ``gather_distributed``. Runs without gradients.

        Args:
            *keys: ``V >= 1`` batches of keys ``(B, D)``, enqueued in this order (with a
                ``"lightly"`` bank: one batch, the calls' ``out1``).
            labels: ``(B,)`` integer labels of the keys of each batch; ``None`` stores the
                entries without labels (negatives of every anchor).

        Raises:
            ValueError: when the loss has no memory bank, or for keys or labels of the wrong
                shape.
        """
        if self.memory_bank is None:
            raise ValueError("enqueue needs a memory bank; build the loss with memory_bank_size")
        if isinstance(self.memory_bank, MemoryBankModule):
            if len(keys) != 1 or labels is not None:
                raise ValueError(
                    "with memory_bank_mode='lightly', enqueue takes one batch of keys (out1) and no labels"
                )
            self._lightly_bank_views((keys[0], keys[0]), None)
            self.memory_bank(_lightly_normalized(keys[0]), update=True)
            return
        assert isinstance(self.memory_bank, LabeledMemoryBank)
        embeddings, groups = self._embeddings_and_groups(keys, labels, min_views=1)
        embeddings = _normalized_float(embeddings)
        if self.gather_distributed and dist.world_size() > 1:
            if self.check_inputs:
                _check_equal_batches(keys[0].shape[0], embeddings.device)
            embeddings = torch.cat(_all_gather_no_grad(embeddings), dim=0)
            groups = torch.cat(_all_gather_no_grad(groups), dim=0)
        self.memory_bank.enqueue(embeddings, None if labels is None else groups)

    def _embeddings_and_groups(
        self, views: tuple[Tensor, ...], labels: Tensor | None, min_views: int = 2
    ) -> tuple[Tensor, Tensor]:
        """Flat embeddings and group ids (image ids unique across processes, or labels)."""
        embeddings, groups = flatten_views(views, labels, min_views)
        if labels is None:
            groups = groups + dist.rank() * views[0].shape[0]
        elif self.memory_bank is not None and bool((labels < 0).any()):
            raise ValueError("labels must be >= 0 when a memory bank is used")
        if self.memory_bank is not None:
            self._check_bank_width(embeddings.shape[1])
        return embeddings, groups

    def _check_bank_width(self, dim: int) -> None:
        bank = self.memory_bank
        assert isinstance(bank, LabeledMemoryBank)
        if bank.dim is None:
            bank.materialize(dim)
        elif dim != bank.dim:
            raise ValueError(
                f"embeddings have dimension {dim} but the memory bank was built "
                f"for {bank.dim} (memory_bank_size=({bank.size}, {bank.dim}))"
            )


def _memory_bank(size: int | tuple[int, int]) -> LabeledMemoryBank | None:
    """The bank for ``memory_bank_size``: ``0`` none, ``K`` lazy width, ``(K, D)`` fixed
    (Python or numpy integers, never booleans)."""
    try:
        if isinstance(size, (tuple, list)) and len(size) == 2:
            slots, width = check_count("K", size[0]), check_count("D", size[1], minimum=1)
        else:
            slots, width = check_count("K", size), None
    except ValueError:
        raise ValueError(
            f"memory_bank_size must be 0, an int K >= 0 or a (K >= 0, D >= 1) pair of integers, got {size!r}"
        ) from None
    return LabeledMemoryBank(slots, width) if slots else None


def _lightly_memory_bank(size: Any, gather_distributed: bool) -> MemoryBankModule:
    """lightly's ``MemoryBankModule`` of ``size = (K >= 1, D >= 1)`` rows, its entries (in
    ``(K, D)``) and write pointer saved in ``state_dict()`` (lightly leaves them out)."""
    try:
        if not (isinstance(size, (tuple, list)) and len(size) == 2):
            raise ValueError
        slots, width = check_count("K", size[0], minimum=1), check_count("D", size[1], minimum=1)
    except ValueError:
        raise ValueError(
            f"memory_bank_mode='lightly' needs memory_bank_size=(K >= 1, D >= 1) integers, as lightly's "
            f"NTXentLoss, got {size!r}"
        ) from None
    bank = MemoryBankModule(size=(slots, width), gather_distributed=gather_distributed, feature_dim_first=False)
    for name in ("bank", "bank_ptr"):
        bank.register_buffer(name, getattr(bank, name), persistent=True)
    return bank


def query_bank_loss(
    queries: Tensor, keys: Tensor, negatives: Tensor, temperature: float, k1: float = 0.0, k2: float = 1.0
) -> Tensor:
    """TCL of each query with one positive, its own key, and the same negatives for all.

    ``L_i = log(exp(s_i / t) + k1 exp(-s_i) + k2 sum_n exp(q_i.n / t)) - s_i / t`` with
    ``s_i = q_i.k_i``, averaged over the ``B`` queries; at ``k1 = 0, k2 = 1`` the cross-entropy
    of lightly's ``NTXentLoss`` with a memory bank. One log-sum-exp per query.

    Args:
        queries: ``(B, D)`` L2-normalised queries.
        keys: ``(B, D)`` L2-normalised keys, ``keys[i]`` the positive of ``queries[i]``.
        negatives: ``(K, D)`` negatives of every query (L2-normalised, as a bank holds them).
        temperature: ``t`` (> 0).
        k1: weight of the hard-positive term (>= 0).
        k2: weight of the negatives (> 0).

    Returns:
        The scalar loss in the queries' dtype.
    """
    positive = (queries * keys).sum(dim=1, keepdim=True)  # (B, 1) similarities
    parts = [positive / temperature, queries @ negatives.to(queries).t() / temperature + math.log(k2)]
    if k1 > 0:
        parts.append(math.log(k1) - positive)
    return (torch.logsumexp(torch.cat(parts, dim=1), dim=1) - positive[:, 0] / temperature).mean()


def _lightly_normalized(embeddings: Tensor) -> Tensor:
    """L2-normalised as lightly's ``NTXentLoss`` normalises, in float32 (float64 stays), outside autocast."""
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        return nn.functional.normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)), dim=1)


def _normalized_float(embeddings: Tensor) -> Tensor:
    """L2-normalised embeddings in float32 (float64 stays), outside autocast."""
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        return stable_normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)))


def _all_gather_no_grad(tensor: Tensor) -> list[Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.world_size())]
    torch.distributed.all_gather(out, tensor.contiguous())
    return out


def _global_mean_weights(local_weights: Tensor) -> Tensor:
    """Rescale local mean weights so that the mean over processes is the global-batch mean.

    ``local_weights`` are ``has_positive / n_local``; the result is
    ``has_positive * world_size / n_global``.
    """
    has_pos = (local_weights > 0).to(local_weights.dtype)
    count = has_pos.sum().detach().clone()
    torch.distributed.all_reduce(count)
    return has_pos * dist.world_size() / count.clamp_min(1)


def flatten_views(views: tuple[Tensor, ...], labels: Tensor | None, min_views: int = 2) -> tuple[Tensor, Tensor]:
    """Stack ``V`` views of ``(B, D)`` into ``(V*B, D)`` embeddings and ``(V*B,)`` group ids.

    Group ids are ``labels`` repeated per view, or the image index ``0..B-1`` without labels.
    """
    if len(views) < min_views:
        raise ValueError(f"TCLLoss needs at least {min_views} view(s), got {len(views)}")
    first = views[0]
    for v, out in enumerate(views):
        if not isinstance(out, Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"view {v} must be a (B, D) tensor, got {shape}")
        if out.shape != first.shape:
            raise ValueError(
                f"all views must have the same shape; view 0 is {tuple(first.shape)}, view {v} is {tuple(out.shape)}"
            )
        check_embeddings(f"view {v}", out, check_finite=False)  # data, rows, columns (finite: later)
    check_same_device(**{f"view {v}": out for v, out in enumerate(views)})
    batch = first.shape[0]
    if labels is None:
        base = torch.arange(batch, device=first.device)
    else:
        check_ids("labels", labels, batch, match="the views")
        check_same_device(views=first, labels=labels)
        base = labels
    return torch.cat(views, dim=0), base.repeat(len(views))
