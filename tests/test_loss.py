"""TCLLoss against independent oracles: lightly, pytorch-metric-learning, the official formula."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NTXentLoss
from pytorch_metric_learning.losses import SupConLoss

from tcl_ssl import TCLLoss, tcl_loss
from tcl_ssl.bench.loss import official_formula as official_tcl_loss
from tcl_ssl.loss import positive_pairs


def _views(batch: int = 24, dim: int = 16, num_views: int = 2, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=gen, dtype=dtype) for _ in range(num_views)]


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_equals_lightly_ntxent_for_k1_0_k2_1_two_views(temperature):
    out0, out1 = _views()
    ours = TCLLoss(temperature=temperature, k1=0.0, k2=1.0)(out0, out1)
    theirs = NTXentLoss(temperature=temperature)(out0, out1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_views", [2, 3])
def test_equals_pml_supcon_for_k1_0_k2_1_with_labels(num_views):
    views = _views(num_views=num_views)
    labels = torch.randint(0, 5, (views[0].shape[0],), generator=torch.Generator().manual_seed(1))
    ours = TCLLoss(temperature=0.1, k1=0.0, k2=1.0)(*views, labels=labels)
    theirs = SupConLoss(temperature=0.1)(torch.cat(views), labels.repeat(num_views))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature,k1,k2", [(0.1, 5000.0, 1.0), (0.2, 100.0, 3.0), (0.5, 1.0, 0.5), (1.0, 0.0, 2.0)])
@pytest.mark.parametrize("supervised", [False, True])
def test_equals_official_formula(temperature, k1, k2, supervised):
    views = _views(batch=12, num_views=3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 4, 5]) if supervised else None
    ours = TCLLoss(temperature, k1, k2)(*views, labels=labels)
    groups = (labels if supervised else torch.arange(12)).repeat(3)
    expected = official_tcl_loss(torch.cat(views), groups, temperature, k1, k2)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


def test_functional_core_matches_module():
    views = _views(num_views=2)
    labels = torch.randint(0, 3, (24,))
    module = TCLLoss(0.2, 10.0, 2.0)(*views, labels=labels)
    functional = tcl_loss(torch.cat(views), labels.repeat(2), 0.2, 10.0, 2.0)
    torch.testing.assert_close(module, functional)


def test_gradients_match_finite_differences():
    views = [v.requires_grad_(True) for v in _views(batch=6, dim=5, num_views=3, dtype=torch.float64)]
    labels = torch.tensor([0, 1, 0, 2, 1, 3])

    def f(*vs):
        return TCLLoss(0.3, 20.0, 1.5)(*vs, labels=labels)

    assert torch.autograd.gradcheck(f, tuple(views), eps=1e-6, atol=1e-7)


def test_gradients_match_autograd_of_official_formula():
    z = _views(batch=20, dim=8, num_views=1, dtype=torch.float64)[0].requires_grad_(True)
    groups = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(3))
    (g_ours,) = torch.autograd.grad(tcl_loss(z, groups, 0.1, 5000.0, 1.0), z)
    (g_ref,) = torch.autograd.grad(official_tcl_loss(z, groups, 0.1, 5000.0, 1.0), z)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-8, atol=1e-10)


def test_anchors_without_positives_are_left_out_of_the_mean():
    z = _views(batch=10, num_views=1, dtype=torch.float64)[0]
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 5, 6])  # anchors 5..9 have no positive
    ours = tcl_loss(z, groups, 0.1, 5000.0, 1.0)
    expected = official_tcl_loss(z, groups, 0.1, 5000.0, 1.0)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, expected)


def test_batch_without_any_positive_gives_zero_loss_and_zero_gradient():
    z = torch.randn(8, 4, requires_grad=True)
    loss = tcl_loss(z, torch.arange(8))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_positive_pairs_matches_dense_mask():
    groups = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(4))
    rows, cols = positive_pairs(groups, groups, torch.arange(40))
    dense = (groups[:, None] == groups[None, :]) & ~torch.eye(40, dtype=torch.bool)
    sparse = torch.zeros(40, 40, dtype=torch.bool)
    sparse[rows, cols] = True
    assert torch.equal(dense, sparse)
    assert rows.numel() == int(dense.sum())


def test_invariant_to_scale_of_embeddings():
    out0, out1 = _views()
    loss = TCLLoss()
    torch.testing.assert_close(loss(out0, out1), loss(3.0 * out0, 0.5 * out1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"k1": -1.0}, "k1"),
        ({"k2": 0.0}, "k2"),
        ({"k2": float("nan")}, "k2"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TCLLoss(**kwargs)


def test_bad_inputs_raise_clear_errors():
    loss = TCLLoss()
    a, b = _views()
    with pytest.raises(ValueError, match="at least 2 view"):
        loss(a)
    with pytest.raises(ValueError, match="same shape"):
        loss(a, b[:5])
    with pytest.raises(ValueError, match="labels must have shape"):
        loss(a, b, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite"):
        loss(a, torch.full_like(b, float("nan")))
    with pytest.raises(ValueError, match=r"\(B, D\) tensor"):
        loss(a[0], b[0])
    with pytest.raises(ValueError, match="2-d"):
        tcl_loss(a[0], torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        loss(a, b, labels=torch.zeros(a.shape[0]))
