"""Gradient coefficients dL_i/dS_ij against autograd of the official formula, and their shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from tcl_ssl.bench.loss import official_formula as official_tcl_loss
from tcl_ssl.cli import main
from tcl_ssl.gradients import (
    SweepSetting,
    gradient_coefficients,
    plot_gradients,
    similarity_gradient,
    sweep_pair_coefficient,
)

HYPERPARAMETERS = [(0.1, 5000.0, 1.0), (0.2, 100.0, 3.0), (0.5, 1.0, 0.5), (0.1, 0.0, 1.0)]


def _official_per_anchor(sim: torch.Tensor, groups: torch.Tensor, t: float, k1: float, k2: float):
    """``(N,)`` per-anchor ``L_i`` of the official formula, as a function of the similarity matrix."""
    n = sim.shape[0]
    not_self = ~torch.eye(n, dtype=torch.bool)
    pos = (groups[:, None] == groups[None, :]) & not_self
    neg = groups[:, None] != groups[None, :]
    exp_logits = torch.exp(sim / t)
    denom = (exp_logits * pos).sum(1) + k1 * (torch.exp(-sim) * pos).sum(1) + k2 * (exp_logits * neg).sum(1)
    log_prob = sim / t - torch.log(denom)[:, None]
    return -(log_prob * pos).sum(1) / pos.sum(1).clamp_min(1)


def _batch(n: int = 14, dim: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 4, (n,), generator=gen)
    groups[-1] = 99  # an anchor without positives
    return z, groups


@pytest.mark.parametrize("temperature,k1,k2", HYPERPARAMETERS)
def test_coefficients_equal_per_anchor_autograd_of_official_formula(temperature, k1, k2):
    z, groups = _batch()
    zn = F.normalize(z, dim=1)
    sim = zn @ zn.T
    per_anchor = _official_per_anchor(sim, groups, temperature, k1, k2)
    has_pos = torch.tensor([bool((groups == g).sum() > 1) for g in groups])
    # The per-anchor oracle is the shared oracle before its mean.
    torch.testing.assert_close(per_anchor[has_pos].mean(), official_tcl_loss(z, groups, temperature, k1, k2))

    jacobian = torch.autograd.functional.jacobian(
        lambda s: _official_per_anchor(s, groups, temperature, k1, k2), sim
    )  # (N, N, N): d L_a / d S_bc; L_i depends on row i only
    expected = torch.einsum("iij->ij", jacobian)
    expected[~has_pos] = 0.0
    ours = gradient_coefficients(z, groups, temperature, k1, k2).coefficients
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("temperature,k1,k2", HYPERPARAMETERS[:2])
def test_coefficients_chain_to_autograd_of_official_loss_on_embeddings(temperature, k1, k2):
    """Batch mean of the coefficients, chained through S = zn zn^T and the normalisation."""
    z, groups = _batch(seed=1)
    z = z.requires_grad_(True)
    (expected,) = torch.autograd.grad(official_tcl_loss(z, groups, temperature, k1, k2), z)

    coefficients = gradient_coefficients(z, groups, temperature, k1, k2)
    has_pos = coefficients.positive_mask.any(dim=1).to(z.dtype)
    weighted = coefficients.coefficients * (has_pos / has_pos.sum())[:, None]
    zn = F.normalize(z, dim=1)
    (ours,) = torch.autograd.grad(zn, z, grad_outputs=(weighted + weighted.T) @ zn.detach())
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


def test_masks_signs_and_supcon_rows_sum_to_zero():
    z, groups = _batch(seed=2)
    tcl = gradient_coefficients(z, groups, 0.1, 5000.0, 2.0)
    assert not (tcl.positive_mask & tcl.negative_mask).any()
    assert not tcl.positive_mask.diagonal().any() and not tcl.negative_mask.diagonal().any()
    rows = tcl.positive_mask.any(dim=1)
    assert (tcl.push[rows][tcl.negative_mask[rows]] > 0).all()  # every negative is pushed away
    assert torch.equal(tcl.coefficients[~rows], torch.zeros_like(tcl.coefficients[~rows]))
    assert torch.equal(tcl.coefficients.diagonal(), torch.zeros(z.shape[0], dtype=z.dtype))
    # SupCon: dL_i/dS_ij = softmax_ij / t - pos_ij / (|P(i)| t), whose row sums are 0.
    supcon = gradient_coefficients(z, groups, 0.1, 0.0, 1.0)
    torch.testing.assert_close(supcon.coefficients.sum(dim=1), torch.zeros(z.shape[0], dtype=z.dtype))


def test_similarity_gradient_with_keys_and_self_index():
    z, groups = _batch(seed=3)
    zn = F.normalize(z, dim=1)
    full = gradient_coefficients(z, groups, 0.2, 10.0, 1.5)
    rows = similarity_gradient(zn[:5] @ zn.T, groups[:5], groups, 0.2, 10.0, 1.5, self_index=torch.arange(5))
    torch.testing.assert_close(rows.coefficients, full.coefficients[:5])
    assert torch.equal(rows.positive_mask, full.positive_mask[:5])


@pytest.mark.parametrize("kind", ["positive", "negative"])
@pytest.mark.parametrize("k1,k2", [(0.0, 1.0), (5000.0, 1.0), (100.0, 4.0)])
def test_sweep_equals_hand_written_closed_form(kind, k1, k2):
    setting = SweepSetting(
        num_positives=3, num_negatives=7, positive_similarity=0.4, negative_similarity=-0.2, temperature=0.2
    )
    t, p, n = setting.temperature, setting.num_positives, setting.num_negatives
    for s in (-0.9, 0.1, 0.95):
        pos = [s] + [0.4] * (p - 1) if kind == "positive" else [0.4] * p
        neg = [-0.2] * n if kind == "positive" else [s] + [-0.2] * (n - 1)
        denom = sum(math.exp(x / t) + k1 * math.exp(-x) for x in pos) + k2 * sum(math.exp(x / t) for x in neg)
        if kind == "positive":
            expected = (math.exp(s / t) / t - k1 * math.exp(-s)) / denom - 1 / (p * t)
        else:
            expected = k2 * math.exp(s / t) / (t * denom)
        got = sweep_pair_coefficient(torch.tensor([s], dtype=torch.float64), kind, k1, k2, setting)
        assert got.item() == pytest.approx(expected, rel=1e-12)


def test_k1_lifts_the_pull_on_hard_positives_above_supcons_bound():
    """SupCon pulls a positive by at most 1/(|P| t); k1 adds a pull that grows with hardness."""
    setting = SweepSetting()
    x = torch.linspace(-1.0, 1.0, 81, dtype=torch.float64)
    bound = 1.0 / (setting.num_positives * setting.temperature)
    pulls = {k1: -sweep_pair_coefficient(x, "positive", k1, 1.0, setting) for k1 in (0.0, 100.0, 1000.0, 5000.0)}
    assert (pulls[0.0] <= bound + 1e-12).all()
    hard = x <= 0.0
    for low, high in [(0.0, 100.0), (100.0, 1000.0), (1000.0, 5000.0)]:
        assert (pulls[high][hard] > pulls[low][hard]).all()
    assert (pulls[5000.0][hard] > bound).all()
    extra = pulls[5000.0][hard] - pulls[0.0][hard]
    assert (extra[1:] < extra[:-1]).all()  # the harder the positive, the larger the extra pull


def test_k2_scales_the_push_on_negatives_and_harder_negatives_are_pushed_more():
    setting = SweepSetting()
    x = torch.linspace(-1.0, 1.0, 81, dtype=torch.float64)
    pushes = {k2: sweep_pair_coefficient(x, "negative", 5000.0, k2, setting) for k2 in (1.0, 2.0, 4.0)}
    for k2, push in pushes.items():
        assert (push > 0).all() and (push[1:] > push[:-1]).all()
        if k2 > 1:
            ratio = push / pushes[1.0]
            # push(k2)/push(1) = k2 (A + Y) / (A + k2 Y) lies in (1, k2]: D grows with k2 too.
            assert (ratio > 1).all() and (ratio <= k2 + 1e-12).all()


def test_plot_and_main_write_a_png(tmp_path):
    path = plot_gradients(tmp_path / "g.png", k1_values=(0.0, 5000.0), k2_values=(1.0, 2.0), points=11)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "sub" / "cli.png"
    assert main(["gradients", "--out", str(out), "--k1", "0,100", "--k2", "1,4", "--num-positives", "2"]) == 0
    assert out.stat().st_size > 10_000


def test_bad_inputs_raise():
    z, groups = _batch()
    with pytest.raises(ValueError, match="groups"):
        gradient_coefficients(z, groups[:-1])
    with pytest.raises(ValueError, match="k1"):
        gradient_coefficients(z, groups, k1=-1.0)
    with pytest.raises(ValueError, match="kind"):
        sweep_pair_coefficient(torch.zeros(2), "anchor", 0.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity must have shape"):
        similarity_gradient(torch.zeros(3, 4), torch.zeros(3), torch.zeros(5))
