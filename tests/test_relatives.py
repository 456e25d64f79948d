"""HCL and the debiased loss (tcl_ssl.relatives) against the papers' equation written out per anchor,
their limits (NT-Xent, each other, the clamp), DCL as TCL's limit, and the relatives' gradient picture."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from lightly.loss import DCLLoss, DCLWLoss, NTXentLoss
from torch.nn import functional as F

from tcl_ssl import DebiasedLoss, HCLLoss, debiased_loss, hcl_loss, tcl_loss
from tcl_ssl.gradients import (
    RelativesSetting,
    SweepSetting,
    relative_pair_coefficient,
    relative_row_losses,
    sweep_pair_coefficient,
)


def oracle(z: torch.Tensor, groups: list[int], t: float, tau_plus: float, beta: float) -> float:
    """The papers' loss, one anchor at a time in Python floats (float64), as the official code
    writes it: reweighted sum = sum(imp * neg) / mean(imp) with imp = neg**beta, debiased by
    tau+ times n times the mean positive term, clamped below at n e^{-1/t}."""
    zn = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in z.double().tolist()]
    total, anchors = 0.0, 0
    for i, anchor in enumerate(zn):
        sim = [sum(a * b for a, b in zip(anchor, other)) for other in zn]
        pos = [math.exp(sim[j] / t) for j in range(len(zn)) if j != i and groups[j] == groups[i]]
        neg = [math.exp(sim[j] / t) for j in range(len(zn)) if groups[j] != groups[i]]
        if not pos:
            continue
        n = len(neg)
        imp = [e**beta for e in neg]
        reweighted = sum(w * e for w, e in zip(imp, neg)) / (sum(imp) / n)
        ng = (-tau_plus * n * (sum(pos) / len(pos)) + reweighted) / (1 - tau_plus)
        ng = max(ng, n * math.exp(-1 / t))
        total += sum(-math.log(p / (p + ng)) for p in pos) / len(pos)
        anchors += 1
    return total / max(anchors, 1)


def official_two_view(out_1: torch.Tensor, out_2: torch.Tensor, t: float, tau_plus: float, beta: float) -> torch.Tensor:
    """The official HCL criterion (joshr17/HCL image/main.py), vectorised, for two views."""
    b = out_1.shape[0]
    out_1, out_2 = F.normalize(out_1, dim=1), F.normalize(out_2, dim=1)
    out = torch.cat([out_1, out_2])
    neg = torch.exp(out @ out.T / t)
    keep = ~torch.eye(2 * b, dtype=torch.bool) & ~torch.eye(2 * b, dtype=torch.bool).roll(b, dims=1)
    neg = neg[keep].view(2 * b, -1)
    pos = torch.exp((out_1 * out_2).sum(1) / t).repeat(2)
    n = 2 * b - 2
    imp = (beta * neg.log()).exp()
    ng = (-tau_plus * n * pos + (imp * neg).sum(1) / imp.mean(1)) / (1 - tau_plus)
    ng = torch.clamp(ng, min=n * math.exp(-1 / t))
    return (-torch.log(pos / (pos + ng))).mean()


def _views(batch: int, views: int, dim: int = 8, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, dim, generator=gen, dtype=dtype)
    return [base + 0.8 * torch.randn(batch, dim, generator=gen, dtype=dtype) for _ in range(views)]


CASES = [  # batch, views, t, tau+, beta
    (4, 2, 0.5, 0.1, 1.0),
    (6, 3, 0.2, 0.05, 2.0),
    (5, 4, 0.1, 0.3, 0.5),
    (8, 2, 0.07, 0.0, 1.0),
    (3, 2, 1.0, 0.5, 6.0),
]


@pytest.mark.parametrize("batch,num_views,t,tau_plus,beta", CASES)
def test_hcl_and_debiased_equal_the_per_anchor_equation(batch, num_views, t, tau_plus, beta):
    views = _views(batch, num_views, seed=batch)
    groups = list(range(batch)) * num_views
    z = torch.cat(views)
    expected_hcl, expected_debiased = oracle(z, groups, t, tau_plus, beta), oracle(z, groups, t, tau_plus, 0.0)
    hcl = HCLLoss(temperature=t, tau_plus=tau_plus, beta=beta)(*views)
    assert hcl.dtype == torch.float64
    assert hcl.item() == pytest.approx(expected_hcl, rel=1e-12)
    assert hcl_loss(z, torch.tensor(groups), t, tau_plus, beta).item() == pytest.approx(expected_hcl, rel=1e-12)
    debiased = DebiasedLoss(temperature=t, tau_plus=tau_plus)(*views)
    assert debiased.item() == pytest.approx(expected_debiased, rel=1e-12)
    assert debiased_loss(z, torch.tensor(groups), t, tau_plus).item() == pytest.approx(expected_debiased, rel=1e-12)


def test_groups_with_several_positives_and_an_anchor_without_one():
    """The functional core takes any group ids: M positives per anchor, lone anchors skipped."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(11, 6, generator=gen, dtype=torch.float64)
    groups = [0, 1, 2, 0, 1, 2, 0, 0, 1, 3, 7]  # group 3 and 7: no positive
    for beta in (0.0, 1.5):
        got = hcl_loss(z, torch.tensor(groups), 0.3, 0.2, beta)
        assert got.item() == pytest.approx(oracle(z, groups, 0.3, 0.2, beta), rel=1e-12)


@pytest.mark.parametrize("t,tau_plus,beta", [(0.5, 0.1, 1.0), (0.2, 0.1, 0.5), (0.5, 0.0, 0.0)])
def test_two_views_equal_the_official_vectorised_criterion(t, tau_plus, beta):
    out0, out1 = _views(16, 2, dim=12, seed=3)
    expected = official_two_view(out0, out1, t, tau_plus, beta)
    torch.testing.assert_close(HCLLoss(t, tau_plus, beta)(out0, out1), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("t", [0.07, 0.2, 0.5])
def test_limits_ntxent_and_each_other(t):
    out0, out1 = _views(10, 2, seed=7)
    ntxent = NTXentLoss(temperature=t)(out0, out1)
    torch.testing.assert_close(HCLLoss(t, tau_plus=0.0, beta=0.0)(out0, out1), ntxent, rtol=1e-12, atol=0)
    torch.testing.assert_close(DebiasedLoss(t, tau_plus=0.0)(out0, out1), ntxent, rtol=1e-12, atol=0)
    for tau_plus in (0.05, 0.1, 0.4):
        torch.testing.assert_close(
            HCLLoss(t, tau_plus, beta=0.0)(out0, out1), DebiasedLoss(t, tau_plus)(out0, out1), rtol=1e-12, atol=0
        )
    # beta > 0 and tau+ > 0 do change the loss.
    assert abs(HCLLoss(t, 0.0, 1.0)(out0, out1).item() - ntxent.item()) > 1e-6
    assert abs(DebiasedLoss(t, 0.1)(out0, out1).item() - ntxent.item()) > 1e-6


def test_the_clamp_holds_where_the_estimate_falls_below_n_exp_minus_1_over_t():
    """Orthogonal images, identical views: s_p = 1, s_n = 0. The debiased estimate
    n (1 - tau+ e^{1/t}) / (1 - tau+) is below the floor n e^{-1/t} for t = 0.2 (tau+ e^5 > 1),
    above it for t = 1; the loss is -log(e^{1/t} / (e^{1/t} + Ng)) with the right Ng."""
    batch = 4
    eye = torch.eye(batch, 8, dtype=torch.float64)
    n = 2 * batch - 2
    for t, clamped in ((0.2, True), (1.0, False)):
        tau_plus = 0.1
        raw = n * (1 - tau_plus * math.exp(1 / t)) / (1 - tau_plus)
        floor = n * math.exp(-1 / t)
        assert (raw < floor) == clamped
        ng = max(raw, floor)
        expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + ng))
        for loss_fn in (DebiasedLoss(t, tau_plus), HCLLoss(t, tau_plus, beta=2.0)):  # equal negatives: beta moot
            assert loss_fn(eye, eye.clone()).item() == pytest.approx(expected, rel=1e-12)
    # Clamped, the estimate is a constant: the loss's gradient is the positive term's alone.
    views = [eye.clone().requires_grad_(True) for _ in range(2)]
    DebiasedLoss(0.2, 0.1)(*views).backward()
    assert all(torch.isfinite(v.grad).all() for v in views)


@pytest.mark.parametrize("t,k2", [(0.5, 1e12), (0.2, 1e12), (0.1, 1e14)])
def test_dcl_is_the_limit_of_tcl_at_k1_0_minus_log_k2(t, k2):
    """lim_{k2 -> inf} TCL(k1=0, k2) - log k2 = DCL (lightly's DCLLoss). The gap is
    mean_i log(1 + e^{s_p/t} / (k2 sum_n e^{s_n/t})) <= e^{2/t} / (k2 n): the tolerance."""
    out0, out1 = _views(8, 2, seed=11)
    z = torch.cat([out0, out1])
    groups = torch.arange(8).repeat(2)
    tcl = tcl_loss(z, groups, t, 0.0, k2) - math.log(k2)
    dcl = DCLLoss(temperature=t)(out0, out1)
    bound = math.exp(2 / t) / (k2 * 14)
    assert bound < 1e-5
    assert abs(tcl.item() - dcl.item()) <= bound + 1e-12
    assert tcl.item() >= dcl.item() - 1e-12  # the gap is >= 0


@pytest.mark.parametrize("beta,tau_plus", [(1.0, 0.1), (0.0, 0.3), (2.0, 0.0)])
def test_gradcheck_float64(beta, tau_plus):
    views = [v.requires_grad_(True) for v in _views(3, 3, dim=4, seed=13)]
    assert torch.autograd.gradcheck(lambda *vs: HCLLoss(0.4, tau_plus, beta)(*vs), views)


def test_small_temperature_float32_is_finite_and_matches_float64():
    views64 = _views(6, 2, seed=17)
    views32 = [v.float().requires_grad_(True) for v in views64]
    groups = list(range(6)) * 2
    for t in (0.01, 0.005):
        loss = HCLLoss(t, 0.1, 1.0)(*views32)
        grads = torch.autograd.grad(loss, views32)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(oracle(torch.cat(views64), groups, t, 0.1, 1.0), rel=1e-4)


def test_under_autocast_the_loss_is_float32():
    views = [v.to(torch.bfloat16) for v in _views(4, 2, seed=19, dtype=torch.float32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert HCLLoss()(*views).dtype == torch.float32


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: HCLLoss(tau_plus=1.0), "tau_plus must be a number in \\[0, 1\\)"),
        (lambda: HCLLoss(tau_plus=-0.1), "tau_plus must be a finite number >= 0"),
        (lambda: HCLLoss(beta=-1.0), "beta must be a finite number >= 0"),
        (lambda: HCLLoss(temperature=0.0), "temperature must be a finite number > 0"),
        (lambda: DebiasedLoss(temperature=float("nan")), "temperature"),
        (lambda: DebiasedLoss(tau_plus=True), "tau_plus"),
        (lambda: HCLLoss(gather_distributed="yes"), "gather_distributed must be True or False"),
        (lambda: hcl_loss(torch.randn(4, 3), torch.arange(4), tau_plus=np.float64(1.5)), "tau_plus"),
    ],
)
def test_bad_hyperparameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_are_refused():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="takes no labels"):
        HCLLoss()(a, b, labels=torch.arange(4))
    with pytest.raises(ValueError, match="DebiasedLoss needs at least 2 views"):
        DebiasedLoss()(a)
    with pytest.raises(ValueError, match="same shape"):
        HCLLoss()(a, torch.randn(5, 8))
    with pytest.raises(ValueError, match="non-finite"):
        HCLLoss()(a, torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="groups must have shape"):
        hcl_loss(torch.cat([a, b]), torch.arange(4))
    with pytest.raises(ValueError, match="key_groups is required"):
        debiased_loss(a, torch.arange(4), keys=b)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")  # lightly's DCLW weights
def test_relative_row_losses_of_dcl_and_dclw_are_lightlys_losses():
    """The gradient picture's per-anchor DCL / DCLW rows, summed over a batch, are lightly's
    DCLLoss / DCLWLoss, in value and in gradient (so the picture's autograd shows theirs)."""
    out0, out1 = (v.requires_grad_(True) for v in _views(6, 2, seed=23))
    setting = RelativesSetting(temperature=0.3, sigma=0.5)
    for name, reference in (("dcl", DCLLoss(temperature=0.3)), ("dclw", DCLWLoss(temperature=0.3, sigma=0.5))):
        expected = reference(out0, out1)
        e0, e1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
        total = 0.0
        for a, b in ((e0, e1), (e1, e0)):
            off = ~torch.eye(6, dtype=torch.bool)
            rows = torch.cat([(a * b).sum(1, keepdim=True), (a @ a.T)[off].view(6, 5), (a @ b.T)[off].view(6, 5)], 1)
            if name == "dclw":  # the weights see this batch's positive pairs: one row at a time
                losses = []
                for i in range(6):
                    others = (a * b).sum(1).detach()
                    losses.append(_dclw_row(rows[i : i + 1], others, i, setting))
                total = total + torch.cat(losses).mean() / 2
            else:
                total = total + relative_row_losses("dcl", rows, setting).mean() / 2
        torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-12)
        ours = torch.autograd.grad(total, (out0, out1))
        theirs = torch.autograd.grad(expected, (out0, out1))
        for mine, ref in zip(ours, theirs):
            torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)


def _dclw_row(row: torch.Tensor, positives: torch.Tensor, i: int, setting: RelativesSetting) -> torch.Tensor:
    """DCLW's row through :func:`relative_row_losses`, whose weight assumes the other ``B - 1``
    positive pairs sit at one similarity: exact when they do, so rescale through the log-sum-exp:
    the other pairs at the similarity ``sigma log(mean_{b != i} exp(s_b / sigma))`` give the same weight."""
    others = torch.cat([positives[:i], positives[i + 1 :]]) / setting.sigma
    level = setting.sigma * (torch.logsumexp(others, 0) - math.log(others.numel()))
    batch_setting = RelativesSetting(
        num_negatives=row.shape[1] - 1,
        positive_similarity=float(level),
        temperature=setting.temperature,
        sigma=setting.sigma,
    )
    return relative_row_losses("dclw", row, batch_setting)


def test_relatives_sweep_matches_finite_differences_of_the_oracle_and_tcls_closed_form():
    setting = RelativesSetting(num_negatives=6, positive_similarity=0.3, negative_similarity=-0.1, temperature=0.4)
    x = torch.tensor([-0.7, 0.2, 0.9], dtype=torch.float64)
    h = 1e-6
    for loss, beta in (("hcl", setting.beta), ("debiased", 0.0)):
        for kind in ("positive", "negative"):
            got = relative_pair_coefficient(x, kind, loss, setting)
            for value, coefficient in zip(x.tolist(), got.tolist()):
                row = [setting.positive_similarity] + [setting.negative_similarity] * setting.num_negatives

                def row_loss(s: float, row=row, kind=kind, beta=beta) -> float:
                    sims = list(row)
                    sims[0 if kind == "positive" else 1] = s
                    return _row_oracle(sims, setting.temperature, setting.tau_plus, beta)

                numeric = (row_loss(value + h) - row_loss(value - h)) / (2 * h)
                assert coefficient == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    # ntxent / tcl rows equal the library's closed form (sweep_pair_coefficient) with one positive.
    tcl_setting = SweepSetting(1, setting.num_negatives, setting.positive_similarity, setting.negative_similarity, 0.4)
    for kind in ("positive", "negative"):
        torch.testing.assert_close(
            relative_pair_coefficient(x, kind, "tcl", setting),
            sweep_pair_coefficient(x, kind, setting.k1, setting.k2, tcl_setting),
        )
        torch.testing.assert_close(
            relative_pair_coefficient(x, kind, "ntxent", setting),
            sweep_pair_coefficient(x, kind, 0.0, 1.0, tcl_setting),
        )


def _row_oracle(sims: list[float], t: float, tau_plus: float, beta: float) -> float:
    pos, neg = math.exp(sims[0] / t), [math.exp(s / t) for s in sims[1:]]
    n = len(neg)
    imp = [e**beta for e in neg]
    ng = (-tau_plus * n * pos + sum(w * e for w, e in zip(imp, neg)) / (sum(imp) / n)) / (1 - tau_plus)
    return -math.log(pos / (pos + max(ng, n * math.exp(-1 / t))))


def test_the_picture_shows_what_the_knobs_do():
    """DCL pulls every positive by exactly 1/t; HCL pushes hard negatives harder than the debiased
    loss (ratio increasing with similarity); debiasing pushes every negative at least as hard as
    NT-Xent; DCLW pulls hard positives more than easy ones."""
    setting = RelativesSetting()
    x = torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)
    t = setting.temperature
    torch.testing.assert_close(-relative_pair_coefficient(x, "positive", "dcl", setting), torch.full_like(x, 1 / t))
    hcl = relative_pair_coefficient(x, "negative", "hcl", setting)
    debiased = relative_pair_coefficient(x, "negative", "debiased", setting)
    ntxent = relative_pair_coefficient(x, "negative", "ntxent", setting)
    ratio = hcl / debiased
    assert (ratio[1:] > ratio[:-1]).all()
    assert (debiased >= ntxent).all()
    dclw_pull = -relative_pair_coefficient(x, "positive", "dclw", setting)
    assert (dclw_pull[1:] < dclw_pull[:-1]).all()


def test_relatives_bad_inputs():
    with pytest.raises(ValueError, match="loss must be one of"):
        relative_row_losses("triplet", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n >= 1 negatives"):
        relative_row_losses("hcl", torch.zeros(2, 1))
    with pytest.raises(ValueError, match="sigma"):
        relative_row_losses("dclw", torch.zeros(2, 3), RelativesSetting(sigma=0.0))
    with pytest.raises(ValueError, match="kind"):
        relative_pair_coefficient(torch.zeros(2), "anchor", "hcl")  # type: ignore[arg-type]


WORLD, LOCAL_BATCH = 2, 5


def _distributed_inputs() -> list[torch.Tensor]:
    return _views(WORLD * LOCAL_BATCH, 3, seed=29)


def _distributed_worker(rank: int, port: int, results) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        out = []
        for loss_fn in (
            HCLLoss(0.3, 0.1, 1.5, gather_distributed=True),
            DebiasedLoss(0.3, 0.2, gather_distributed=True),
        ):
            local = [v[rows].clone().requires_grad_(True) for v in _distributed_inputs()]
            loss = loss_fn(*local)
            loss.backward()
            out.append((loss.detach(), [v.grad.clone() for v in local]))
        results[rank] = out
    finally:
        torch_dist.destroy_process_group()


def test_gather_distributed_on_two_processes_equals_one_process_on_the_whole_batch():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(port, results), nprocs=WORLD, join=True)
    for index, loss_fn in enumerate((HCLLoss(0.3, 0.1, 1.5), DebiasedLoss(0.3, 0.2))):
        views = [v.clone().requires_grad_(True) for v in _distributed_inputs()]
        expected = loss_fn(*views)
        expected.backward()
        # DDP averages over processes: the mean of the local losses and gradients is the global ones.
        torch.testing.assert_close((results[0][index][0] + results[1][index][0]) / WORLD, expected.detach())
        for rank in range(WORLD):
            rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
            for grad, v in zip(results[rank][index][1], views):
                torch.testing.assert_close(grad / WORLD, v.grad[rows])
