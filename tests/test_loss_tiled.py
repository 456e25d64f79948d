"""The tiled loss (anchors by keys, streaming log-sum-exp) equals the dense loss and the official
formula, and its extra memory is that of a tile, not of the N x M similarity matrix."""

from __future__ import annotations

import pytest
import torch

import tcl_ssl.loss_core as core
from tcl_ssl import TCLLoss, tcl_loss
from tcl_ssl.bench.loss import official_formula, peak_extra_memory
from tcl_ssl.pml import TCLPMLLoss

DIM = 8


def _embeddings(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _loss_and_grad(fn, *tensors: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


def _assert_same(result, reference, rtol: float = 1e-12) -> None:
    (loss, grads), (ref_loss, ref_grads) = result, reference
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=0.0)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=rtol * float(ref_grad.abs().max()))


GROUPINGS = {
    "3 labels (positives as rectangles)": lambda n: torch.arange(n) % 3,
    "two views (positives as index lists)": lambda n: torch.arange(n) % (n // 2),
    "25 labels, one anchor alone": lambda n: torch.cat([torch.arange(n - 1) % 25, torch.tensor([999])]),
}
#: (temperature, k1, k2): the default, SupCon, both knobs, and small temperatures that need a row shift
SETTINGS = [(0.1, 5000.0, 1.0), (0.1, 0.0, 1.0), (0.3, 20.0, 0.5), (0.002, 5000.0, 1.0), (0.004, 3.0, 2.0)]
#: (block_size, key_block_size): one tile, row blocks, row and key blocks, ragged small tiles
BLOCKS = [(None, None), (32, None), (32, 40), (7, 13)]


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("temperature,k1,k2", SETTINGS)
@pytest.mark.parametrize("n", [96, 130])
def test_every_tiling_equals_the_official_formula_in_float64(grouping, temperature, k1, k2, n):
    z, groups = _embeddings(n), GROUPINGS[grouping](n)
    reference = _loss_and_grad(lambda x: official_formula(x, groups, temperature, k1, k2), z)
    for block_size, key_block_size in BLOCKS:
        result = _loss_and_grad(
            lambda x: tcl_loss(x, groups, temperature, k1, k2, block_size=block_size, key_block_size=key_block_size),
            z,
        )
        _assert_same(result, reference, rtol=1e-10)


@pytest.mark.parametrize("sparse", [True, False])
def test_separate_keys_with_own_entries_and_unlabelled_bank_match_the_dense_path(sparse, monkeypatch):
    # the positives of the tiles as index lists, or (with everything dense) as rectangles
    monkeypatch.setattr(core, "SPARSE_POSITIVES", 1.0 if sparse else 0.0)
    n, m = 50, 120
    anchors, keys = _embeddings(n, 1), _embeddings(m, 2)
    groups = torch.arange(n) % 4
    key_groups = torch.cat([torch.arange(m - 30) % 4, torch.full((30,), -1)])  # 30 bank entries: negatives
    self_index = torch.where(torch.arange(n) % 5 == 0, -1, torch.arange(n) + 7)  # some anchors are keys

    def loss(block_size, key_block_size):
        return lambda a, k: tcl_loss(
            a,
            groups,
            0.2,
            50.0,
            1.5,
            keys=k,
            key_groups=key_groups,
            self_index=self_index,
            block_size=block_size,
            key_block_size=key_block_size,
        )

    dense = _loss_and_grad(loss(n, m), anchors, keys)
    for block_size, key_block_size in [(16, None), (16, 25), (5, 7), (None, None)]:
        _assert_same(_loss_and_grad(loss(block_size, key_block_size), anchors, keys), dense)


def test_three_views_with_labels_and_a_memory_bank_tiled_equal_dense():
    views = [_embeddings(24, seed) for seed in range(3)]
    labels = torch.arange(24) % 5

    def run(**tiles):
        loss_fn = TCLLoss(temperature=0.2, k1=100.0, memory_bank_size=(40, DIM), **tiles)
        losses, grads = [], []
        for step in range(2):  # the second step sees the first step's keys in the bank
            leaves = [v.roll(step, 0).clone().requires_grad_(True) for v in views]
            loss = loss_fn(*leaves, labels=labels)
            loss.backward()
            losses.append(loss.detach())
            grads += [leaf.grad for leaf in leaves]
        return torch.stack(losses), grads

    _assert_same(run(block_size=5, key_block_size=11), run(block_size=10_000))


def test_float32_tiles_match_float64_and_the_gradient_equals_finite_differences():
    z, groups = _embeddings(40), torch.arange(40) % 3
    exact = _loss_and_grad(lambda x: tcl_loss(x, groups, 0.1, 5000.0, block_size=40), z)
    single = _loss_and_grad(lambda x: tcl_loss(x, groups, 0.1, 5000.0, block_size=6, key_block_size=9), z.float())
    torch.testing.assert_close(single[0].double(), exact[0], rtol=1e-5, atol=0.0)
    torch.testing.assert_close(single[1][0].double(), exact[1][0], rtol=1e-4, atol=1e-6)
    # central differences of the tiled float64 loss along a random direction
    direction = torch.randn(z.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    step = 1e-6

    def loss_at(x):
        return tcl_loss(x, groups, 0.1, 5000.0, block_size=6, key_block_size=9)

    numeric = (loss_at(z + step * direction) - loss_at(z - step * direction)) / (2 * step)
    torch.testing.assert_close((exact[1][0] * direction).sum(), numeric, rtol=1e-6, atol=0.0)


def test_automatic_choice_is_dense_for_small_batches_and_tiles_of_bounded_size_above():
    assert core.plan_blocks(1024, 1024, None, None) == (1024, 1024)  # 2**20 pairs: one tile
    rows, keys = core.plan_blocks(4096, 4096, None, None)
    assert keys == 4096 and rows * keys == core.TILE_ELEMENTS
    rows, keys = core.plan_blocks(65536, 65536, None, None)
    assert (rows, keys) == (core.MIN_ROW_BLOCK, 65536) and rows * keys <= 2 * core.TILE_ELEMENTS
    rows, keys = core.plan_blocks(100, 10_000_000, None, None)  # huge key set: keys in blocks too
    assert rows == core.MIN_ROW_BLOCK and keys < 10_000_000 and rows * keys <= core.TILE_ELEMENTS
    assert core.plan_blocks(50, 70, 8, None) == (8, 70) and core.plan_blocks(50, 70, 8, 9) == (8, 9)
    assert core.plan_blocks(50, 70, 500, 900) == (50, 70)


def test_tiled_extra_memory_is_a_fraction_of_the_dense_matrix():
    n = 2048
    z, groups = _embeddings(n, dtype=torch.float32), torch.arange(n) % 10
    nxn = 4 * n * n

    def peak(**tiles) -> float:
        leaf = z.clone().requires_grad_(True)
        return peak_extra_memory(lambda: tcl_loss(leaf, groups, **tiles).backward(), torch.device("cpu")) / nxn

    dense, tiled = peak(block_size=n), peak(block_size=128)
    assert dense >= 1.0  # at least the similarity matrix
    assert tiled <= 0.25  # a 128 x 2048 tile and its buffers, and the (N, D) gradients


def test_pml_loss_in_tiles_equals_its_matrix_form():
    z, labels = _embeddings(60), torch.arange(60) % 4
    matrix = _loss_and_grad(lambda x: TCLPMLLoss(temperature=0.2, k1=30.0, k2=0.8)(x, labels), z)
    tiled = _loss_and_grad(lambda x: TCLPMLLoss(temperature=0.2, k1=30.0, k2=0.8, block_size=7)(x, labels), z)
    _assert_same(tiled, matrix)
    ref = _embeddings(45, 4)
    ref_labels = torch.arange(45) % 4
    matrix = _loss_and_grad(lambda x, r: TCLPMLLoss()(x, labels, ref_emb=r, ref_labels=ref_labels), z, ref)
    tiled = _loss_and_grad(
        lambda x, r: TCLPMLLoss(block_size=8, key_block_size=10)(x, labels, ref_emb=r, ref_labels=ref_labels), z, ref
    )
    _assert_same(tiled, matrix, rtol=1e-9)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "64"])
def test_block_sizes_other_than_positive_integers_are_refused(value):
    z, groups = torch.randn(6, 4), torch.arange(6) % 2
    with pytest.raises(ValueError, match=r"block_size must be None \(automatic\) or an integer >= 1, got"):
        tcl_loss(z, groups, block_size=value)
    with pytest.raises(ValueError, match=r"key_block_size must be None \(automatic\) or an integer >= 1"):
        TCLLoss(key_block_size=value)
    with pytest.raises(ValueError, match=r"block_size must be None"):
        TCLPMLLoss(block_size=value)
