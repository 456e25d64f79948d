"""TCLLoss(memory_bank_mode="lightly") against lightly's NTXentLoss with a memory bank as the oracle:
value, gradients and bank state over bank sizes, batch sizes, temperatures and several steps."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import NTXentLoss

from tcl_ssl import TCLLoss

DIM = 6


def _pair(bank_size: int, temperature: float, seed: int = 0) -> tuple[NTXentLoss, TCLLoss]:
    """lightly's loss and ours, each built right after the same seed (both draw the bank then)."""
    torch.manual_seed(seed)
    theirs = NTXentLoss(temperature=temperature, memory_bank_size=(bank_size, DIM))
    torch.manual_seed(seed)
    ours = TCLLoss(temperature=temperature, k1=0.0, memory_bank_size=(bank_size, DIM), memory_bank_mode="lightly")
    return theirs, ours


def _views(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, DIM, generator=gen), torch.randn(batch, DIM, generator=gen)


@pytest.mark.parametrize(
    "bank_size,batch,temperature",
    [
        (16, 4, 0.5),  # the bank fills and wraps exactly at its end (ptr + B == K)
        (10, 4, 0.2),  # a batch straddles the end: its rows beyond it are lost, the pointer goes to 0
        (8, 16, 0.1),  # a batch larger than the bank
        (64, 8, 0.07),  # still filling: random initial entries act as negatives
    ],
)
def test_equals_lightly_ntxent_with_a_memory_bank_over_steps(bank_size, batch, temperature):
    theirs, ours = _pair(bank_size, temperature)
    torch.testing.assert_close(ours.memory_bank.bank, theirs.memory_bank.bank, rtol=0, atol=0)  # initialisation
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        out0, out1 = _views(batch, gen)
        grads = []
        values = []
        for loss_fn in (theirs, ours):
            a, b = out0.clone().requires_grad_(), out1.clone().requires_grad_()
            value = loss_fn(a, b)
            value.backward()
            values.append(value.detach())
            grads.append((a.grad, b.grad))
        torch.testing.assert_close(values[1], values[0], rtol=1e-6, atol=2e-6, msg=f"step {step}")
        for mine, reference in zip(grads[1], grads[0]):
            torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
        assert torch.equal(ours.memory_bank.bank, theirs.memory_bank.bank), f"bank differs after step {step}"
        assert int(ours.memory_bank.bank_ptr) == int(theirs.memory_bank.bank_ptr)


def test_counts_only_the_bank_as_negatives():
    """On identical embeddings lightly's loss is log(K + 1); with in-batch negatives it would be log(2B - 1 + K)."""
    bank_size, batch = 32, 8
    ours = TCLLoss(temperature=0.5, k1=0.0, memory_bank_size=(bank_size, DIM), memory_bank_mode="lightly")
    same = torch.ones(batch, DIM)
    ours.memory_bank.bank.copy_(torch.nn.functional.normalize(torch.ones(bank_size, DIM), dim=1))
    assert ours(same, same).item() == pytest.approx(math.log(bank_size + 1), rel=1e-6)
    first = TCLLoss(temperature=0.5, k1=0.0, memory_bank_size=(bank_size, DIM), anchors="first")
    first.enqueue(torch.ones(bank_size, DIM))  # normalised, as the loss enqueues
    assert first(same, same).item() == pytest.approx(math.log(batch + bank_size), rel=1e-6)  # the other keys too


def test_k1_and_k2_against_the_equation_in_float64():
    gen = torch.Generator().manual_seed(3)
    t, k1, k2, bank_size = 0.2, 30.0, 2.5, 12
    ours = TCLLoss(temperature=t, k1=k1, k2=k2, memory_bank_size=(bank_size, DIM), memory_bank_mode="lightly")
    ours.memory_bank.bank.copy_(torch.nn.functional.normalize(torch.randn(bank_size, DIM, generator=gen), dim=1))
    bank = ours.memory_bank.bank.double().clone()
    out0, out1 = (x.double() for x in _views(5, gen))
    value = ours(out0, out1)
    q = out0 / out0.norm(dim=1, keepdim=True)
    k = out1 / out1.norm(dim=1, keepdim=True)
    expected = 0.0
    for i in range(5):
        s = float(q[i] @ k[i])
        denominator = math.exp(s / t) + k1 * math.exp(-s) + k2 * sum(math.exp(float(q[i] @ n) / t) for n in bank)
        expected += -math.log(math.exp(s / t) / denominator) / 5
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_bank_is_updated_when_out0_requires_grad_and_by_enqueue_as_lightly():
    theirs, ours = _pair(12, 0.3)
    gen = torch.Generator().manual_seed(4)
    out0, out1 = _views(5, gen)
    for loss_fn in (theirs, ours):
        loss_fn.eval()  # lightly ignores the mode: a query that requires grad updates the bank
        loss_fn(out0.clone().requires_grad_(), out1)
    assert int(ours.memory_bank.bank_ptr) == 5 and torch.equal(ours.memory_bank.bank, theirs.memory_bank.bank)
    before = ours.memory_bank.bank.clone()
    for loss_fn in (theirs, ours):
        loss_fn.train()
        loss_fn(out0, out1)  # no grad on the queries: lightly's evaluation call, bank unchanged
    assert torch.equal(ours.memory_bank.bank, before) and int(ours.memory_bank.bank_ptr) == 5
    ours(out0.clone().requires_grad_(), out1, update_bank=False)
    assert torch.equal(ours.memory_bank.bank, before)
    ours.enqueue(out1)
    theirs(out0.clone().requires_grad_(), out1)
    assert torch.equal(ours.memory_bank.bank, theirs.memory_bank.bank) and int(ours.memory_bank.bank_ptr) == 10


def test_bank_round_trips_through_state_dict():
    _, ours = _pair(12, 0.3, seed=5)
    gen = torch.Generator().manual_seed(6)
    ours(*(v.requires_grad_() for v in _views(7, gen)))
    state = ours.state_dict()
    assert set(state) == {"memory_bank.bank", "memory_bank.bank_ptr"}
    torch.manual_seed(99)  # a different random initial bank, replaced by the saved one
    restored = TCLLoss(temperature=0.3, k1=0.0, memory_bank_size=(12, DIM), memory_bank_mode="lightly")
    restored.load_state_dict(state)
    assert torch.equal(restored.memory_bank.bank, ours.memory_bank.bank)
    assert int(restored.memory_bank.bank_ptr) == 7
    out0, out1 = _views(3, gen)
    assert torch.equal(restored(out0, out1), ours(out0, out1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"memory_bank_size": 0}, r"memory_bank_mode='lightly' needs memory_bank_size=\(K >= 1, D >= 1\).*got 0"),
        ({"memory_bank_size": 64}, r"needs memory_bank_size=\(K >= 1, D >= 1\).*got 64"),
        ({"memory_bank_size": (0, 8)}, r"needs memory_bank_size.*got \(0, 8\)"),
        (
            {"memory_bank_size": (8, 4), "anchors": "all"},
            r"anchors must be 'first' with memory_bank_mode='lightly'; got 'all'",
        ),
        (
            {"memory_bank_size": (8, 4), "memory_bank_mode": "moco"},
            r"memory_bank_mode must be one of labeled, lightly; got 'moco'",
        ),
        ({"memory_bank_size": (8, 4), "temperature": -0.5}, r"temperature must be .*> 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    kwargs = {"memory_bank_mode": "lightly"} | kwargs
    with pytest.raises(ValueError, match=match):
        TCLLoss(**kwargs)


def test_bad_calls_are_refused():
    loss_fn = TCLLoss(memory_bank_size=(8, 4), memory_bank_mode="lightly")
    views = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="takes two views"):
        loss_fn(*views, torch.randn(3, 4))
    with pytest.raises(ValueError, match="takes no labels"):
        loss_fn(*views, labels=torch.arange(3))
    with pytest.raises(ValueError, match=r"dimension 5 but the memory bank was built for 4"):
        loss_fn(torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="view 1 contains non-finite"):
        loss_fn(views[0], torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="one batch of keys"):
        loss_fn.enqueue(*views)
