"""Computational core of the TCL loss: per-anchor terms and the closed-form gradient, dense or tiled.

The loss of anchor ``i`` needs its similarities ``S_ij = z_i . k_j`` to every key ``j``
(definitions in :mod:`tcl_ssl.loss`). This module evaluates them in tiles: anchors in blocks
of ``row_block`` rows, keys in blocks of ``key_block`` columns. A tile is one
``(row_block, key_block)`` similarity matrix; nothing larger is ever allocated besides the
``(N, D)`` and ``(M, D)`` gradients of anchors and keys.

- One key block (``key_block >= M``): each block of anchors sees all its keys at once; its
  log-sum-exp, its loss and its gradient ``dL/dS`` come from that one tile, and its share of
  ``dL/dz = dL/dS @ K`` and ``dL/dk = dL/dS^T @ Z`` is accumulated at once: three matrix
  products in all, as for the dense matrix. With one anchor block too this is the dense path.
- Several key blocks: a first pass over the key blocks accumulates each anchor's denominator
  with a streaming (online) log-sum-exp, which rescales the running sum whenever the running
  maximum grows; a second pass recomputes each tile and accumulates the gradient (four matrix
  products in all).

All tiles of one block share the same arithmetic (:func:`_tile_exponentials`,
:func:`_tile_gradient`), so the dense and tiled paths give the same result up to the order
of floating-point sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "TCLFunction",
    "weighted_loss_and_grads",
    "TCLTerms",
    "tcl_terms",
    "plan_blocks",
    "tiled_blocks",
    "positive_pairs",
    "DENSE_ELEMENTS",
    "TILE_ELEMENTS",
    "MIN_ROW_BLOCK",
]

#: automatic choice: the dense path (one ``N x M`` tile) up to this many similarities
DENSE_ELEMENTS = 1 << 21
#: automatic choice above :data:`DENSE_ELEMENTS`: similarities per tile (16 MiB in float32)
TILE_ELEMENTS = 1 << 22
#: automatic choice: fewest anchors per block before the keys are split into blocks too
MIN_ROW_BLOCK = 64


def plan_blocks(num_anchors: int, num_keys: int, block_size: int | None, key_block_size: int | None) -> tuple[int, int]:
    """Anchors and keys per tile: ``(row_block, key_block)``.

    Args:
        num_anchors: ``N``; num_keys: ``M``.
        block_size: anchors per block; ``None`` chooses by size: the dense path (one tile)
            when ``N * M <= DENSE_ELEMENTS``, else tiles of about ``TILE_ELEMENTS``
            similarities with all keys in one block while that leaves at least
            ``MIN_ROW_BLOCK`` anchors per block.
        key_block_size: keys per block; ``None``: all keys, except as the automatic choice
            above decides.

    Returns:
        ``(row_block, key_block)``, each at least 1 and at most ``N`` and ``M``.
    """
    n, m = max(num_anchors, 1), max(num_keys, 1)
    if block_size is None:
        rows, keys = (n, m) if n * m <= DENSE_ELEMENTS else tiled_blocks(n, m)
    else:
        rows, keys = block_size, m
    if key_block_size is not None:
        keys = key_block_size
    return min(rows, n), min(keys, m)


def tiled_blocks(num_anchors: int, num_keys: int) -> tuple[int, int]:
    """The automatic tiles, whatever the size: ``(row_block, key_block)`` with about
    ``TILE_ELEMENTS`` similarities per tile, all keys in one block while that leaves at least
    ``MIN_ROW_BLOCK`` anchors per block."""
    n, m = max(num_anchors, 1), max(num_keys, 1)
    rows = max(MIN_ROW_BLOCK, TILE_ELEMENTS // m)
    keys = m if rows * m <= 2 * TILE_ELEMENTS else TILE_ELEMENTS // rows
    return min(rows, n), min(keys, m)


def positive_pairs(anchor_groups: Tensor, key_groups: Tensor, self_index: Tensor | None) -> tuple[Tensor, Tensor]:
    """Index lists ``(rows, cols)`` of all positive pairs, without building an ``(N, M)`` mask.

    Args:
        anchor_groups: ``(N,)`` integer group id of each anchor.
        key_groups: ``(M,)`` integer group id of each key.
        self_index: ``(N,)`` column of each anchor's own key (excluded from its positives),
            or ``-1`` / ``None`` when the anchor is not among the keys.

    Returns:
        Two ``(P,)`` int64 tensors: anchor row and key column of every pair with equal group
        id, the anchor's own key excluded. Rows are sorted.

    Example:
        >>> import torch
        >>> from tcl_ssl.loss import positive_pairs
        >>> groups = torch.tensor([0, 1, 0])
        >>> rows, cols = positive_pairs(groups, groups, torch.arange(3))
        >>> rows.tolist(), cols.tolist()
        ([0, 2], [2, 0])
    """
    order = torch.argsort(key_groups, stable=True)
    sorted_groups = key_groups[order]
    start = torch.searchsorted(sorted_groups, anchor_groups, right=False)
    stop = torch.searchsorted(sorted_groups, anchor_groups, right=True)
    counts = stop - start
    rows = torch.repeat_interleave(torch.arange(anchor_groups.numel(), device=anchor_groups.device), counts)
    # Position of each pair inside its anchor's run of same-group keys.
    offsets = torch.arange(rows.numel(), device=rows.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    cols = order[start[rows] + offsets]
    if self_index is not None:
        keep = cols != self_index[rows]
        rows, cols = rows[keep], cols[keep]
    return rows, cols


@dataclass
class TCLTerms:
    """Per-anchor quantities of one TCL evaluation (in the dtype of the similarities).

    Attributes:
        loss_per_anchor: ``(N,)`` ``L_i``; 0 for anchors without positives.
        num_positives: ``(N,)`` ``|P(i)|``.
        log_denominator: ``(N,)`` ``log D_i``.
        grad_similarity: ``(N, M)`` ``dL_i/dS_ij`` (unweighted by the mean over anchors), the
            closed-form gradient of each anchor's loss with respect to its similarity
            ``S_ij = z_i . z_j`` to every key; 0 on the anchor's own key. ``None`` unless asked.
    """

    loss_per_anchor: Tensor
    num_positives: Tensor
    log_denominator: Tensor
    grad_similarity: Tensor | None


@dataclass
class _Constants:
    """TCL's hyper-parameters in the forms the tile arithmetic uses."""

    temperature: float
    k1: float
    k2: float

    @property
    def inv_t(self) -> float:
        return 1.0 / self.temperature

    @property
    def log_k1(self) -> float:
        return math.log(self.k1)

    @property
    def needs_positives(self) -> bool:
        """Whether a tile's terms depend on which keys are positives (``k1 > 0`` or ``k2 != 1``)."""
        return self.k1 > 0 or self.k2 != 1.0


def _offsets(c: _Constants, shift: Tensor | None) -> Tensor | float:
    """``log k1 - m_i`` per row (``(b,)``), or ``log k1`` without a shift."""
    return c.log_k1 if shift is None else c.log_k1 - shift


class _MaskPositives:
    """The positives of one ``(b, k)`` tile as a mask (``outside``: True off the positives)."""

    def __init__(self, outside: Tensor) -> None:
        self.outside = outside

    def hard(self, scaled_sim: Tensor, shift: Tensor | None, c: _Constants) -> Tensor:
        """``(b, k)`` ``F_ip = k1 exp(-S_ip - m_i)``, 0 off the positives."""
        offset = _offsets(c, shift)
        offset = offset[:, None] if isinstance(offset, Tensor) else offset
        # exp() first (exp(-inf) is slow on the CPU); off the positives the values are dropped
        hard = torch.add(offset, scaled_sim, alpha=-c.temperature).exp_()
        return hard.masked_fill_(self.outside, 0.0)

    def add_row_sums(self, values: Any, out: Tensor) -> Tensor:
        """Add to ``out`` (``(b,)``) each row's sum of ``values`` over its positives."""
        return out.add_(values.sum(dim=1))

    def on_positives(self, tile: Tensor) -> Tensor:
        return torch.where(self.outside, 0.0, tile)

    def scale(self, grad: Tensor, factor: float) -> None:
        grad.copy_(torch.where(self.outside, grad, grad * factor))

    def subtract(self, grad: Tensor, hard: Any, alpha: float) -> None:
        grad.sub_(hard, alpha=alpha)


class _PairPositives:
    """The positives of one ``(b, k)`` tile as index lists: ``rows`` (``(p,)`` tile row of each
    pair) and ``flat`` (``(p,)`` ``row * k + col``); for sparse positives."""

    def __init__(self, rows: Tensor, flat: Tensor) -> None:
        self.rows, self.flat = rows, flat

    def hard(self, scaled_sim: Tensor, shift: Tensor | None, c: _Constants) -> Tensor:
        """``(p,)`` ``F_ip`` per pair."""
        offset = _offsets(c, shift)
        offset = offset[self.rows] if isinstance(offset, Tensor) else offset
        return torch.add(offset, self.on_positives(scaled_sim), alpha=-c.temperature).exp_()

    def add_row_sums(self, values: Any, out: Tensor) -> Tensor:
        return out.index_add_(0, self.rows, values)

    def on_positives(self, tile: Tensor) -> Tensor:
        return tile.reshape(-1).index_select(0, self.flat)

    def scale(self, grad: Tensor, factor: float) -> None:
        grad.view(-1).index_add_(0, self.flat, self.on_positives(grad) * (factor - 1.0))

    def subtract(self, grad: Tensor, hard: Any, alpha: float) -> None:
        grad.view(-1).index_add_(0, self.flat, hard * -alpha)


class _BlockPositives:
    """The positives of one tile as rectangles ``(row_start, row_stop, col_start, col_stop)``
    (anchors and keys sorted by group: each run of anchors of one group has its positives in
    one run of keys), less the anchors' own keys ``(self_rows, self_cols)``."""

    def __init__(self, blocks: list[tuple[int, int, int, int]], self_rows: Tensor | None, self_cols: Tensor | None):
        self.blocks, self.self_rows, self.self_cols = blocks, self_rows, self_cols

    def views(self, tile: Tensor) -> list[Tensor]:
        return [tile[r0:r1, c0:c1] for r0, r1, c0, c1 in self.blocks]

    def hard(self, scaled_sim: Tensor, shift: Tensor | None, c: _Constants) -> list[Tensor]:
        """``F_ip`` of each rectangle (0 on the anchors' own keys)."""
        out = []
        offsets = _offsets(c, shift)
        for (r0, r1, c0, c1), view in zip(self.blocks, self.views(scaled_sim), strict=True):
            offset = offsets[r0:r1, None] if isinstance(offsets, Tensor) else offsets
            hard = torch.add(offset, view, alpha=-c.temperature).exp_()
            if self.self_rows is not None and self.self_cols is not None:
                inside = (self.self_rows >= r0) & (self.self_rows < r1) & (self.self_cols >= c0) & (self.self_cols < c1)
                hard[self.self_rows[inside] - r0, self.self_cols[inside] - c0] = 0.0
            out.append(hard)
        return out

    def add_row_sums(self, values: Any, out: Tensor) -> Tensor:
        for (r0, r1, _, _), value in zip(self.blocks, values, strict=True):
            out[r0:r1] += value.sum(dim=1)
        return out

    def on_positives(self, tile: Tensor) -> list[Tensor]:
        return self.views(tile)

    def scale(self, grad: Tensor, factor: float) -> None:
        for view in self.views(grad):
            view.mul_(factor)

    def subtract(self, grad: Tensor, hard: Any, alpha: float) -> None:
        for view, value in zip(self.views(grad), hard, strict=True):
            view.sub_(value, alpha=alpha)


_Positives = _MaskPositives | _PairPositives | _BlockPositives


def _tile_exponentials(
    scaled_sim: Tensor, positives: _Positives | None, shift: Tensor | None, c: _Constants
) -> tuple[Tensor, Any, Tensor]:
    """Shifted exponentials of one tile and its share of the shifted denominator.

    Args:
        scaled_sim: ``(b, k)`` tile of ``S / t`` (``-inf`` on the anchors' own keys);
            **overwritten** with ``E_ij = exp(S_ij / t - m_i)``.
        positives: the tile's positives (``None`` when ``k1 = 0`` and ``k2 = 1``).
        shift: ``(b,)`` finite row shift ``m_i``; ``None``: no shift (``m_i = 0``).

    Returns:
        ``(E, F, part)``: ``E``; ``F_ip = k1 exp(-S_ip - m_i)`` in the positives' form
        (``None`` when ``k1 = 0``); ``part_i = k2 sum_j E_ij + (1 - k2) sum_p E_ip + sum_p F_ip``.
    """
    hard = None
    if c.k1 > 0:
        assert positives is not None
        hard = positives.hard(scaled_sim, shift, c)
    exps = (scaled_sim if shift is None else scaled_sim.sub_(shift[:, None])).exp_()
    part = exps.sum(dim=1)
    if c.k2 != 1.0:
        assert positives is not None
        on_positives = positives.add_row_sums(positives.on_positives(exps), torch.zeros_like(part))
        part = part.mul_(c.k2).add_(on_positives, alpha=1.0 - c.k2)
    if hard is not None:
        assert positives is not None
        part = positives.add_row_sums(hard, part)
    return exps, hard, part


def _tile_gradient(exps: Tensor, hard: Any, positives: _Positives | None, row_scale: Tensor, c: _Constants) -> Tensor:
    """``(b, k)`` ``w_i dL_i/dS_ij`` of one tile without the positive-mean term, in place of ``exps``.

    ``[k2 E_ij / t + pos_ij ((1 - k2) E_ij / t - F_ij)] / D_i``, scaled by ``row_scale = w_i / D_i``.
    """
    grad = exps
    if c.k2 != 1.0:
        assert positives is not None
        grad = grad.mul_(c.k2)
        positives.scale(grad, 1.0 / c.k2)
    if hard is not None:
        assert positives is not None
        positives.subtract(grad, hard, c.temperature)
    return grad.mul_((c.inv_t * row_scale)[:, None])


def _finite(shift: Tensor) -> Tensor:
    """The row shift, with 0 for rows that have no denominator term at all."""
    return torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))


def tcl_terms(
    similarity: Tensor,
    anchor_groups: Tensor,
    key_groups: Tensor,
    self_index: Tensor | None,
    temperature: float,
    k1: float,
    k2: float,
    with_grad: bool,
) -> TCLTerms:
    """TCL's per-anchor terms, and optionally the closed-form ``dL_i/dS_ij``, from a similarity matrix.

    The dense form of the core for analyses that start from similarities, such as
    :mod:`tcl_ssl.gradients`: one tile with a positive mask and an exact row shift (the
    largest term of each denominator). Nothing is checked here.

    Args:
        similarity: ``(N, M)`` float32 or float64 similarities ``S_ij = z_i . z_j`` between
            L2-normalised anchors and keys. **Overwritten** (it becomes the gradient buffer):
            pass a tensor you own, e.g. ``similarity.clone()``.
        anchor_groups: ``(N,)`` int64 group id of each anchor.
        key_groups: ``(M,)`` int64 group id of each key; a key with an anchor's group id is
            one of its positives, every other key a negative.
        self_index: ``(N,)`` int64 column of each anchor's own key (neither positive nor
            negative), ``-1`` where it has none; ``None`` when no anchor is among the keys.
        temperature: softmax temperature ``t`` (> 0).
        k1: weight of the hard-positive term (>= 0).
        k2: weight of the negatives (> 0).
        with_grad: also compute :attr:`TCLTerms.grad_similarity`.

    Returns:
        The per-anchor terms, in the dtype of ``similarity``; see :class:`TCLTerms`.
    """
    c = _Constants(temperature, k1, k2)
    outside = anchor_groups[:, None] != key_groups[None, :]
    if self_index is not None:
        rows = torch.nonzero(self_index >= 0).squeeze(1)
        similarity[rows, self_index[rows]] = -math.inf
        outside[rows, self_index[rows]] = True
    num_pos = (~outside).sum(dim=1, dtype=similarity.dtype)
    pos_total = similarity.masked_fill(outside, 0.0).sum(dim=1)
    shift = similarity.amax(dim=1) * c.inv_t
    if k1 > 0:
        shift = torch.maximum(shift, c.log_k1 - similarity.masked_fill(outside, math.inf).amin(dim=1))
    shift = _finite(shift)
    exps, hard, denominator = _tile_exponentials(similarity.mul_(c.inv_t), _MaskPositives(outside), shift, c)
    has_pos = num_pos > 0
    safe_num_pos = num_pos.clamp_min(1.0)
    log_denominator = shift + torch.log(denominator)
    loss = torch.where(has_pos, log_denominator - pos_total * c.inv_t / safe_num_pos, 0.0)
    grad = None
    if with_grad:
        row_scale = torch.where(has_pos, 1.0 / denominator, 0.0)
        grad = _tile_gradient(exps, hard, _MaskPositives(outside), row_scale, c)
        positive_scale = torch.where(has_pos, c.inv_t / safe_num_pos, 0.0)
        grad = grad.sub_(torch.where(outside, 0.0, positive_scale[:, None]))
    return TCLTerms(loss, num_pos, log_denominator, grad)


def _sum_rows_into(index: Tensor, values: Tensor, num_rows: int) -> Tensor:
    """``(num_rows, D)`` sums of the rows of ``values`` (``(n, D)``) that share an ``index``.

    ``out[g] = sum_{i: index_i = g} values_i``, as a sparse one-hot ``(num_rows, n)`` matrix
    product (the same as ``index_add_``, and faster on the CPU).
    """
    n = values.shape[0]
    positions = torch.stack([index, torch.arange(n, device=index.device)])
    one_hot = torch.sparse_coo_tensor(positions, values.new_ones(n), (num_rows, n), check_invariants=False)
    return torch.sparse.mm(one_hot, values)


#: largest exponent, by dtype, for which the denominators are summed without a row shift
#: (``exp`` of it, times a million keys, stays far from overflow, and ``exp`` of minus it
#: far from underflow)
UNSHIFTED_EXPONENT = {torch.float32: 40.0, torch.float64: 300.0}

#: index lists instead of a mask for the positives when they are at most this share of all pairs
SPARSE_POSITIVES = 1.0 / 16


class _Batch:
    """One loss evaluation: anchors, keys, their groups, and what is known before any tile.

    Everything that only concerns positives' similarities themselves (``|P(i)|``, the sum of
    ``S_ip`` and its gradient) is computed from per-group sums of the keys and anchors in
    ``O((N + M) D)``; the tiles only handle the denominators. Where the positives matter to the
    tiles (``k1 > 0`` or ``k2 != 1``) they are index lists when sparse (at most
    :data:`SPARSE_POSITIVES` of all pairs); otherwise anchors and keys are sorted by group so
    that the positives of a tile are a few rectangles (:meth:`unsort` restores the order).
    """

    def __init__(
        self,
        anchors: Tensor,
        keys: Tensor,
        anchor_groups: Tensor,
        key_groups: Tensor,
        self_index: Tensor | None,
        weights: Tensor,
        c: _Constants,
    ) -> None:
        n, m = anchors.shape[0], keys.shape[0]
        groups, inverse = torch.unique(torch.cat([anchor_groups, key_groups]), return_inverse=True)
        anchor_gid, key_gid = inverse[:n], inverse[n:]
        self.num_groups = groups.numel()
        # own key in the anchor's own group: counted by the group sums, but not a positive
        own = torch.zeros(n, dtype=torch.bool, device=anchors.device)
        if self_index is not None:
            own = (self_index >= 0) & (key_gid[self_index.clamp_min(0)] == anchor_gid)
        key_counts = torch.bincount(key_gid, minlength=self.num_groups)
        num_pos = (key_counts[anchor_gid] - own.long()).to(anchors.dtype)
        self.c = c
        self.pairs: tuple[Tensor, Tensor] | None = None
        self.order: tuple[Tensor, Tensor] | None = None  # (anchor order, key order) when sorted
        if c.needs_positives and float(num_pos.sum()) <= SPARSE_POSITIVES * n * m:
            self.pairs = positive_pairs(anchor_groups, key_groups, self_index)
        elif c.needs_positives:
            anchor_order, key_order = torch.argsort(anchor_gid, stable=True), torch.argsort(key_gid, stable=True)
            self.order = (anchor_order, key_order)
            anchors, anchor_gid, own, num_pos = (
                anchors[anchor_order],
                anchor_gid[anchor_order],
                own[anchor_order],
                num_pos[anchor_order],
            )
            weights, keys, key_gid = weights[anchor_order], keys[key_order], key_gid[key_order]
            if self_index is not None:
                key_rank = torch.argsort(key_order)
                self_index = torch.where(self_index >= 0, key_rank[self_index.clamp_min(0)], -1)[anchor_order]
        self.anchors, self.keys, self.weights, self.self_index = anchors, keys, weights, self_index
        self.anchor_gid, self.key_gid, self.own, self.num_pos = anchor_gid, key_gid, own, num_pos
        self.has_pos = num_pos > 0
        self.scaled_anchors = anchors * c.inv_t
        group_key_sums = _sum_rows_into(key_gid, keys, self.num_groups)
        self.positive_keys = group_key_sums[anchor_gid]  # (N, D) sum of each anchor's positives
        if self_index is not None:
            own_rows = torch.nonzero(own).squeeze(1)
            self.positive_keys[own_rows] -= keys[self_index[own_rows]]
        self.pos_total = (anchors * self.positive_keys).sum(dim=1)
        self._bound_exponents(c)
        self.runs: list[tuple[int, int, int, int]] = []
        if self.order is not None:
            self.runs = self._group_runs()

    def _bound_exponents(self, c: _Constants) -> None:
        """``k1_top``: ``(N,)`` bound on each anchor's ``log k1 - S_ip`` (``-inf`` without
        positives), and ``unshifted``: whether every exponent is small enough to sum without a
        row shift."""
        anchor_norms = self.anchors.norm(dim=1)
        key_norm = self.keys.norm(dim=1).max() if self.keys.shape[0] else anchor_norms.new_zeros(())
        self.k1_top = torch.full_like(self.num_pos, -math.inf)
        if c.k1 > 0:
            # k1's terms exp(log k1 - S_ip) never exceed exp(log k1 + |z_i| max_j |k_j|)
            self.k1_top = torch.where(self.has_pos, c.log_k1 + anchor_norms * key_norm, self.k1_top)
        largest = float(anchor_norms.max() * key_norm) if anchor_norms.numel() else 0.0
        largest_exponent = largest * max(c.inv_t, 1.0) + (max(c.log_k1, 0.0) if c.k1 > 0 else 0.0)
        self.unshifted = largest_exponent <= UNSHIFTED_EXPONENT[self.anchors.dtype]

    def _group_runs(self) -> list[tuple[int, int, int, int]]:
        """``(row_start, row_stop, key_start, key_stop)`` of each run of sorted anchors of one
        group and the run of sorted keys of that group."""
        run_groups, run_lengths = torch.unique_consecutive(self.anchor_gid, return_counts=True)
        key_start = torch.searchsorted(self.key_gid, run_groups, right=False)
        key_stop = torch.searchsorted(self.key_gid, run_groups, right=True)
        row_stop = torch.cumsum(run_lengths, 0)
        runs = torch.stack([row_stop - run_lengths, row_stop, key_start, key_stop], dim=1).tolist()
        return [(r0, r1, k0, k1) for r0, r1, k0, k1 in runs if k0 < k1]

    def unsort(self, grad_anchors: Tensor, grad_keys: Tensor) -> tuple[Tensor, Tensor]:
        """Gradients in the callers' order of anchors and keys."""
        if self.order is None:
            return grad_anchors, grad_keys
        anchor_order, key_order = self.order
        return grad_anchors[torch.argsort(anchor_order)], grad_keys[torch.argsort(key_order)]

    def tile(self, rows: slice, cols: slice) -> tuple[Tensor, _Positives | None]:
        """``(b, k)`` tile of ``S / t`` (``-inf`` on the anchors' own keys) and its positives."""
        start, stop = cols.start, cols.stop
        scaled_sim = self.scaled_anchors[rows] @ self.keys[cols].T
        self_rows = self_cols = None
        if self.self_index is not None:
            index = self.self_index[rows]
            self_rows = torch.nonzero((index >= start) & (index < stop)).squeeze(1)
            self_cols = index[self_rows] - start
            scaled_sim[self_rows, self_cols] = -math.inf
        if not self.c.needs_positives:
            return scaled_sim, None
        if self.pairs is not None:
            return scaled_sim, self._tile_pairs(rows, cols)
        blocks = [
            (
                max(r0, rows.start) - rows.start,
                min(r1, rows.stop) - rows.start,
                max(k0, start) - start,
                min(k1, stop) - start,
            )
            for r0, r1, k0, k1 in self.runs
            if r0 < rows.stop and r1 > rows.start and k0 < stop and k1 > start
        ]
        return scaled_sim, _BlockPositives(blocks, self_rows, self_cols)

    def _tile_pairs(self, rows: slice, cols: slice) -> _PairPositives:
        """The positive pairs inside one tile, from the sorted pair lists."""
        assert self.pairs is not None
        pair_rows, pair_cols = self.pairs
        bounds = torch.searchsorted(pair_rows, torch.tensor([rows.start, rows.stop], device=pair_rows.device))
        lo, hi = int(bounds[0]), int(bounds[1])
        tile_rows, tile_cols = pair_rows[lo:hi] - rows.start, pair_cols[lo:hi]
        if cols.start > 0 or cols.stop < self.keys.shape[0]:
            keep = (tile_cols >= cols.start) & (tile_cols < cols.stop)
            tile_rows, tile_cols = tile_rows[keep], tile_cols[keep]
        return _PairPositives(tile_rows, tile_rows * (cols.stop - cols.start) + (tile_cols - cols.start))

    def loss(self, rows: slice, shift: Tensor, denominator: Tensor) -> Tensor:
        """``(b,)`` ``L_i`` of a block from its finite shift and shifted denominator."""
        has_pos = self.has_pos[rows]
        mean_logit = self.pos_total[rows] * self.c.inv_t / self.num_pos[rows].clamp_min(1.0)
        return torch.where(has_pos, shift + torch.log(denominator) - mean_logit, 0.0)

    def positive_mean_gradients(self, grad_anchors: Tensor, grad_keys: Tensor) -> None:
        """Add the gradients of ``-sum_i w_i/(|P(i)| t) sum_p S_ip`` to ``(N, D)`` and ``(M, D)``."""
        scale = torch.where(self.has_pos, self.weights * self.c.inv_t / self.num_pos.clamp_min(1.0), 0.0)
        grad_anchors.sub_(self.positive_keys * scale[:, None])
        weighted = self.anchors * scale[:, None]
        grad_keys.sub_(_sum_rows_into(self.anchor_gid, weighted, self.num_groups)[self.key_gid])
        if self.self_index is not None:
            own_rows = torch.nonzero(self.own).squeeze(1)
            grad_keys.add_(_sum_rows_into(self.self_index[own_rows], weighted[own_rows], grad_keys.shape[0]))


def _block_denominator(batch: _Batch, rows: slice, key_block: int) -> tuple[Tensor, Tensor]:
    """First pass over the key blocks: finite shift and shifted denominator of a block of
    anchors by a streaming log-sum-exp (the running sum is rescaled when the maximum grows),
    or a plain sum when the batch needs no shift."""
    shift = batch.k1_top[rows].clone()  # running maximum exponent m_i (-inf before any term)
    denominator = torch.zeros_like(shift)
    num_keys = batch.keys.shape[0]
    for start in range(0, num_keys, key_block):
        scaled_sim, positives = batch.tile(rows, slice(start, min(start + key_block, num_keys)))
        if batch.unshifted:
            denominator += _tile_exponentials(scaled_sim, positives, None, batch.c)[2]
            continue
        new_shift = torch.maximum(shift, scaled_sim.amax(dim=1))
        finite_new = _finite(new_shift)
        rescale = torch.where(torch.isfinite(shift), torch.exp(shift - finite_new), 0.0)
        _, _, part = _tile_exponentials(scaled_sim, positives, finite_new, batch.c)
        denominator = denominator.mul_(rescale).add_(part)
        shift = new_shift
    return (torch.zeros_like(shift) if batch.unshifted else _finite(shift)), denominator


def _block_forward(batch: _Batch, rows: slice, key_block: int, grads: tuple[Tensor, Tensor] | None) -> Tensor:
    """``(b,)`` losses of the anchors ``rows``; adds their tiles' ``dL/dz`` and ``dL/dk`` to
    ``grads`` (``(N, D)`` and ``(M, D)``) when given."""
    num_keys = batch.keys.shape[0]
    one_tile = key_block >= num_keys
    if one_tile:
        scaled_sim, positives = batch.tile(rows, slice(0, num_keys))
        if batch.unshifted:
            shift = torch.zeros_like(batch.k1_top[rows])
            exps, hard, denominator = _tile_exponentials(scaled_sim, positives, None, batch.c)
        else:
            shift = _finite(torch.maximum(scaled_sim.amax(dim=1), batch.k1_top[rows]))
            exps, hard, denominator = _tile_exponentials(scaled_sim, positives, shift, batch.c)
    else:
        shift, denominator = _block_denominator(batch, rows, key_block)
    loss = batch.loss(rows, shift, denominator)
    if grads is None:
        return loss
    grad_anchors, grad_keys = grads
    row_scale = torch.where(batch.has_pos[rows], batch.weights[rows] / denominator, 0.0)
    if one_tile:
        grad = _tile_gradient(exps, hard, positives, row_scale, batch.c)
        grad_anchors[rows].addmm_(grad, batch.keys)
        grad_keys.addmm_(grad.T, batch.anchors[rows])
        return loss
    for start in range(0, num_keys, key_block):  # second pass: each tile again, for its gradient
        cols = slice(start, min(start + key_block, num_keys))
        scaled_sim, positives = batch.tile(rows, cols)
        exps, hard, _ = _tile_exponentials(scaled_sim, positives, None if batch.unshifted else shift, batch.c)
        grad = _tile_gradient(exps, hard, positives, row_scale, batch.c)
        grad_anchors[rows].addmm_(grad, batch.keys[cols])
        grad_keys[cols].addmm_(grad.T, batch.anchors[rows])
    return loss


def weighted_loss_and_grads(
    anchors: Tensor,
    keys: Tensor,
    anchor_groups: Tensor,
    key_groups: Tensor,
    self_index: Tensor | None,
    weights: Tensor,
    temperature: float,
    k1: float,
    k2: float,
    row_block: int,
    key_block: int,
    *,
    with_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``sum_i w_i L_i`` and its gradients with respect to anchors and keys, tile by tile.

    Args:
        anchors: ``(N, D)`` normalised anchors; keys: ``(M, D)`` normalised keys.
        anchor_groups: ``(N,)`` int64; key_groups: ``(M,)`` int64; self_index: ``(N,)`` int64
            column of each anchor's own key or ``-1``, or ``None``.
        weights: ``(N,)`` weights ``w_i``.
        temperature, k1, k2: TCL's hyper-parameters (checked by the caller).
        row_block, key_block: anchors and keys per tile (see :func:`plan_blocks`).
        with_grad: also return ``(N, D)`` and ``(M, D)`` gradients.

    Returns:
        ``(loss, grad_anchors, grad_keys)``; the gradients are ``None`` without ``with_grad``.
    """
    batch = _Batch(anchors, keys, anchor_groups, key_groups, self_index, weights, _Constants(temperature, k1, k2))
    grads = (torch.zeros_like(anchors), torch.zeros_like(keys)) if with_grad else None
    losses = [
        _block_forward(batch, slice(start, min(start + row_block, anchors.shape[0])), key_block, grads)
        for start in range(0, anchors.shape[0], row_block)
    ]
    total = (torch.cat(losses) * batch.weights).sum() if losses else anchors.new_zeros(())
    if grads is None:
        return total, None, None
    batch.positive_mean_gradients(*grads)
    grad_anchors, grad_keys = batch.unsort(*grads)
    return total, grad_anchors, grad_keys


class TCLFunction(torch.autograd.Function):
    """``sum_i w_i L_i`` with the closed-form gradient computed tile by tile in the forward pass.

    ``apply(anchors, keys, anchor_groups, key_groups, self_index, weights, temperature, k1, k2,
    row_block, key_block)``, arguments as in :func:`weighted_loss_and_grads`; the gradients
    of anchors and keys are kept for the backward pass, which only scales them.
    """

    @staticmethod
    def forward(ctx: Any, *inputs: Any) -> Tensor:
        with_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        loss, grad_anchors, grad_keys = weighted_loss_and_grads(*inputs, with_grad=with_grad)
        if with_grad:
            ctx.save_for_backward(grad_anchors, grad_keys)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_anchors, grad_keys = ctx.saved_tensors
        out_anchors = grad_anchors * grad_output if ctx.needs_input_grad[0] else None
        out_keys = grad_keys * grad_output if ctx.needs_input_grad[1] else None
        return (out_anchors, out_keys, *([None] * (len(ctx.needs_input_grad) - 2)))
