"""TCLLoss under mixed precision and at small temperatures, where exp()/sum() overflows."""

from __future__ import annotations

import pytest
import torch

from tcl_ssl import TCLLoss, tcl_loss
from tcl_ssl.bench.loss import official_formula as official_tcl_loss


def _batch(n: int = 64, d: int = 32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, 6, (n,), generator=gen)


@pytest.mark.parametrize("temperature", [0.01, 0.005, 0.002])
def test_small_temperature_is_finite_and_exact_where_float32_exp_overflows(temperature):
    z, groups = _batch()
    ours = tcl_loss(z, groups, temperature, 5000.0, 1.0)
    naive32 = official_tcl_loss(z, groups, temperature, 5000.0, 1.0)
    reference = official_tcl_loss(z.double(), groups, temperature, 5000.0, 1.0)  # float64 holds exp(500)
    assert not torch.isfinite(naive32)  # the exp()/sum() form overflows in float32
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-4)


def test_small_temperature_gradients_are_finite_and_exact():
    z, groups = _batch(n=32)
    z32 = z.clone().requires_grad_(True)
    z64 = z.double().requires_grad_(True)
    tcl_loss(z32, groups, 0.005, 5000.0, 1.0).backward()
    official_tcl_loss(z64, groups, 0.005, 5000.0, 1.0).backward()
    assert torch.isfinite(z32.grad).all()
    torch.testing.assert_close(z32.grad.double(), z64.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_under_autocast_computes_in_float32(dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 32)
    x0, x1 = torch.randn(48, 16), torch.randn(48, 16)
    loss_fn = TCLLoss(temperature=0.05)
    with torch.autocast("cpu", dtype=dtype):
        out0, out1 = layer(x0), layer(x1)
        assert out0.dtype == dtype
        loss = loss_fn(out0, out1)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    # Same value as float32 on the same (low-precision) projections.
    torch.testing.assert_close(loss, loss_fn(out0.float(), out1.float()))
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_loss_and_matching_gradient_dtype(dtype):
    z, groups = _batch()
    z_half = z.to(dtype).requires_grad_(True)
    loss = tcl_loss(z_half, groups, 0.01)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert z_half.grad.dtype == dtype and torch.isfinite(z_half.grad).all()


# Embeddings whose L2 norm overflows in their own precision (sum of squares above the dtype's
# largest number) are normalised stably: each row is scaled by its max-abs first, so any finite
# input gives the loss of its directions. The oracle: the same loss of the unscaled batch, and
# the float64 reference formula on the normalised float64 batch.


@pytest.mark.parametrize(
    "dtype,scale",
    [(torch.float32, 1e30), (torch.float32, 1e20), (torch.float64, 1e300), (torch.float32, 1e-30)],
)
def test_large_or_tiny_finite_embeddings_give_the_loss_of_their_directions(dtype, scale):
    z, groups = _batch()
    z = z.to(dtype)
    expected = tcl_loss(z, groups)
    torch.testing.assert_close(tcl_loss(z * scale, groups), expected)
    reference = official_tcl_loss(torch.nn.functional.normalize(z.double(), dim=1), groups, 0.1, 5000.0, 1.0)
    torch.testing.assert_close(tcl_loss(z * scale, groups).double(), reference, rtol=1e-5, atol=1e-5)


def test_float16_embeddings_near_the_top_of_their_range_give_the_loss_of_their_directions():
    z, groups = _batch()
    big = (z * 1e4).half()  # |x| up to ~4e4: the sum of squares (~1e10) overflows float16 (max 65504)
    assert not torch.isfinite(big.pow(2).sum(dim=1)).all()
    torch.testing.assert_close(tcl_loss(big, groups), tcl_loss(big.float() / 1e4, groups), rtol=1e-4, atol=1e-4)


def test_the_gradient_of_the_stable_normalisation_is_that_of_f_normalize():
    z, groups = _batch(n=16)
    a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    tcl_loss(a, groups).backward()
    official_tcl_loss(torch.nn.functional.normalize(b, dim=1), groups, 0.1, 5000.0, 1.0).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_the_module_the_memory_bank_and_the_pml_face_normalise_stably_too():
    from tcl_ssl.pml import TCLPMLLoss

    z, groups = _batch(n=16)
    v0, v1 = z[:8], z[8:]
    torch.testing.assert_close(TCLLoss()(v0 * 1e30, v1 * 1e30), TCLLoss()(v0, v1))
    banked, plain = TCLLoss(memory_bank_size=32), TCLLoss(memory_bank_size=32)
    for _ in range(2):  # the second call contrasts with the bank's (normalised) entries
        torch.testing.assert_close(banked(v0 * 1e30, v1 * 1e30), plain(v0, v1))
    torch.testing.assert_close(TCLPMLLoss()(z * 1e30, groups), TCLPMLLoss()(z, groups))
