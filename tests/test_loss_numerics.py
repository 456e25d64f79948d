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
